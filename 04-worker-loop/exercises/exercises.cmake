# Workshop exercises of chapter 04 (cmake/workshop.cmake, docs/workshop.md).
add_exercise(04a-interruptible-wait STAGE 030-interruptible-wait LIBS support PkgConfig::HIREDIS
  PROPERTY "handles SIGTERM: a stop during the wait ends it at once"
  CHECK 04-worker-loop-tests FILTER "030 interruptible-wait: a SIGTERM during the wait stops the worker at once, not after the interval"
  EXPECT "failed: r\\.(exited_ok\\(\\)|latency_ms <)")
add_exercise(04b-reliable-queue STAGE 033-processing-list LIBS support PkgConfig::HIREDIS
  PROPERTY "no lost work: after SIGKILL mid-job and a restart, every job is done"
  CHECK 04-worker-loop-tests FILTER "033 processing-list: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice"
  EXPECT "failed: r\\.lost\\.empty\\(\\)")
add_exercise(04c-recover-every-worker STAGE 050-worker-pool LIBS support PkgConfig::HIREDIS
  PROPERTY "no lost work: a pool restarted with fewer workers recovers the jobs of the missing ones"
  CHECK 04-worker-loop-tests FILTER "050 worker-pool: a pool restarted with fewer workers still recovers the jobs of the missing ones"
  EXPECT "failed: .*recovered: ")
