# Workshop exercises of chapter 01 (cmake/workshop.cmake, docs/workshop.md).
add_exercise(01a-flag-in-handler STAGE 020-flag-in-handler LIBS support
  PROPERTY "SIGTERM mid-record: the record is finished, exit 0"
  CHECK 01-signals-tests FILTER "020 flag: SIGTERM mid-record finishes the record and exits 0"
  EXPECT "failed: !?\\(?o\\.file\\.torn\\(\\)")
add_exercise(01b-signal-thread STAGE 030-signal-thread LIBS support
  PROPERTY "SIGTERM is taken by the signal thread: the record is finished, exit 0"
  CHECK 01-signals-tests FILTER "030 signal thread: SIGTERM mid-record finishes the record and exits 0"
  EXPECT "failed: o\\.status\\.ok\\(\\)")
add_exercise(01c-second-signal STAGE 040-second-signal LIBS support
  PROPERTY "a second SIGTERM forces the exit: status 1 at once"
  CHECK 01-signals-tests FILTER "040 second signal: a second SIGTERM exits at once with status 1"
  EXPECT "failed: o\\.status\\.code == 1")
