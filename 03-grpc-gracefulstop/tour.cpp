// 03-grpc-gracefulstop-tour: every stage through the same two scenarios the
// tests use (scenarios.hpp), measured live, printed as one scoreboard.
#include <cstdio>
#include <string>

#include "scenarios.hpp"
#include "testkit/scoreboard.hpp"
#include "testkit/tour.hpp"

using namespace grpcstop;

namespace {

std::string ms(milliseconds d) { return std::to_string(d.count()) + " ms"; }

// Progress on a terminal, and the stop on Ctrl-C/SIGTERM (testkit/tour.hpp).
testkit::TourRuntime* tour = nullptr;

std::vector<testkit::Cell> measure(const Stage& stage, testkit::RedisServer& redis) {
  const std::string binary = std::string(CHAPTER_BIN_DIR) + "/" + stage.name;
  tour->stage(stage.name);
  tour->scenario("SIGTERM under gRPC load");
  StopReport load = run_stop_scenario(binary, redis, stage.args, under_load_options());
  tour->scenario("SIGTERM with an open stream");
  StopReport stream = run_stop_scenario(binary, redis, stage.args, open_stream_options(stage));

  testkit::Cell handles = !load.exit ? testkit::wrong("still running")
                          : load.exit->ok() ? testkit::right("exit 0, " + ms(*load.shutdown_time))
                                            : testkit::wrong(load.exit->str());
  std::size_t lost = load.abandoned().size() + load.lost().size();
  testkit::Cell no_lost = testkit::verdict(lost == 0, std::to_string(lost) + " lost");
  testkit::Cell no_errors = testkit::verdict(load.failed() == 0, std::to_string(load.failed()) + " failed");
  testkit::Cell bounded = !stream.exit ? testkit::wrong("hangs, killed")
                                       : testkit::right(ms(*stream.shutdown_time) + ", " + stream.exit->str());
  testkit::Cell first = load.not_serving_after
                            ? testkit::right("NOT_SERVING +" + ms(*load.not_serving_after))
                            : testkit::wrong("never NOT_SERVING");
  return {handles, no_lost, no_errors, bounded, first};
}

}  // namespace

int main() {
  testkit::TourRuntime runtime("03-grpc-gracefulstop");
  tour = &runtime;
  try {
    testkit::RedisServer redis;
    testkit::Scoreboard board("03-grpc-gracefulstop: SIGTERM under gRPC load, then with an open stream",
                              {"handles SIGTERM", "no lost work", "no errors to clients", "bounded",
                               "stops taking traffic first"});
    for (const Stage& stage : stages()) board.add_row(stage.name, measure(stage, redis));

    LoadOptions rolling;
    rolling.rpcs = 100'000;  // an upper bound: the load stops when the restarts are done
    rolling.rate = 200;
    rolling.work_ms = 20;
    rolling.id_prefix = "roll";
    const Stage& last = stages().back();
    tour->stage(last.name);
    tour->scenario("rolling restart of two servers");
    RollingReport r = run_rolling_restart(std::string(CHAPTER_BIN_DIR) + "/" + last.name, redis, last.args, rolling);

    board.add_note("under load: 40 Work RPCs of 400 ms at 50/s, SIGTERM once 10 run on the server; the client");
    board.add_note("  polls health and holds back new RPCs once it reads NOT_SERVING. lost = started, never persisted.");
    board.add_note("bounded: one Ticks stream open at SIGTERM; budgets: 023 to 030 1000 ms, 040 to 070 1500 ms (300 ms drain).");
    // The Ticks stream ends at 023's deadline; a Work that sleeps through it does not.
    for (const char* prefix : {"023", "025-"}) {
      const Stage& s = stage(prefix);
      StopOptions long_work;
      long_work.load.rpcs = 1;
      long_work.load.work_ms = 3000;
      long_work.sigterm_after = 1;
      long_work.exit_timeout = milliseconds(6000);
      tour->stage(s.name);
      tour->scenario("SIGTERM during a Work longer than the deadline");
      StopReport r = run_stop_scenario(std::string(CHAPTER_BIN_DIR) + "/" + s.name, redis, s.args, long_work);
      board.add_note("one Work of 3000 ms at SIGTERM, " + s.name + ": " +
                     (r.exit ? r.exit->str() + " " + ms(*r.shutdown_time) + " after SIGTERM" : std::string("hangs")) +
                     ", client: " + (r.failed() ? r.failed_by_code().begin()->first : std::string("OK")) + ", " +
                     (r.abandoned().empty() ? "persisted" : "not persisted") + ".");
    }
    for (const char* prefix : {"040", "050"}) {
      const Stage& s = stage(prefix);
      StopOptions idle = under_load_options();
      idle.idle_clients = 1;
      tour->stage(s.name);
      tour->scenario("SIGTERM under load with an idle long-lived client");
      idle.hold_client_binary = std::string(CHAPTER_BIN_DIR) + "/hold-client";
      StopReport r = run_stop_scenario(std::string(CHAPTER_BIN_DIR) + "/" + s.name, redis, s.args, idle);
      board.add_note("under load + 1 idle long-lived client, " + s.name + ": " +
                     (r.exit ? r.exit->str() + ", " + ms(*r.shutdown_time) + " after SIGTERM" : std::string("hangs")) +
                     ", last reply -> exit " + (r.last_reply_to_exit ? ms(*r.last_reply_to_exit) : std::string("-")) + ".");
    }
    board.add_note("rolling restart, 2 x " + last.name + " behind round_robin + health checks + retries: " + std::to_string(r.ok()) +
                   "/" + std::to_string(r.load.rpcs.size()) + " OK, " +
                   std::to_string(static_cast<int>(r.load.rpcs.size()) - r.ok()) + " failed, " + std::to_string(r.lost().size()) + " lost.");
    runtime.clear();
    std::fputs(board.render().c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "03-grpc-gracefulstop-tour: %s\n", e.what());
    return 1;
  }
}
