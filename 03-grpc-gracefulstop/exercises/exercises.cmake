# Workshop exercises of chapter 03 (cmake/workshop.cmake, docs/workshop.md).
set(ex_libs support 03-grpc-gracefulstop_proto PkgConfig::HIREDIS)
add_exercise(03a-shutdown-thread STAGE 020-shutdown-thread LIBS ${ex_libs}
  PROPERTY "handles SIGTERM: Shutdown() on the signal thread, exit 0"
  CHECK 03-grpc-gracefulstop-tests FILTER "020 shutdown-thread handles SIGTERM: Shutdown() on the signal thread, exit 0"
  EXPECT "failed: r\\.exit")
add_exercise(03b-shutdown-deadline STAGE 030-shutdown-deadline LIBS ${ex_libs}
  PROPERTY "bounded: an open stream is cut off at the deadline, exit 1"
  CHECK 03-grpc-gracefulstop-tests FILTER "030 shutdown-deadline bounded: an open stream is cut off at the deadline and reported, exit 1"
  EXPECT "failed: r\\.exit")
add_exercise(03c-health-not-serving STAGE 040-health-drain LIBS ${ex_libs}
  PROPERTY "stops taking traffic first: NOT_SERVING at once, RPCs still served"
  CHECK 03-grpc-gracefulstop-tests FILTER "040 health-drain stops taking traffic first: NOT_SERVING at once, RPCs still served during the drain"
  EXPECT "failed: r\\.not_serving_after")
