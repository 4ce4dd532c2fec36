# Workshop exercises of chapter 02 (cmake/workshop.cmake, docs/workshop.md).
add_exercise(02a-track-background-work STAGE 030-track-background-work LIBS support PkgConfig::HTTPLIB PkgConfig::HIREDIS
  PROPERTY "no lost work: every write acknowledged before SIGTERM is persisted"
  CHECK 02-http-shutdown-tests FILTER "030 track: every write acknowledged before SIGTERM is persisted"
  EXPECT "failed: o\\.report\\.lost == 0")
add_exercise(02b-shutdown-deadline STAGE 036-hard-deadline LIBS support PkgConfig::HTTPLIB PkgConfig::HIREDIS
  PROPERTY "bounded: a handler that never returns is abandoned at the deadline, exit 1"
  CHECK 02-http-shutdown-tests FILTER "036 hard-deadline: a handler that would never return is abandoned at the deadline, not cancelled, reported by id, exit 1"
  EXPECT "failed: .*o\\.second_signal_sent")
add_exercise(02c-drain-first STAGE 050-drain-first LIBS support PkgConfig::HTTPLIB PkgConfig::HIREDIS
  PROPERTY "stops taking traffic first: /readyz says 503 while requests are still served"
  CHECK 02-http-shutdown-tests FILTER "050 drain-first: /readyz says 503 while requests are still served, and idle keep-alive connections are closed"
  EXPECT "failed: o\\.readiness_503")
