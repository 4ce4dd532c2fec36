// 02-http-shutdown tour: every stage through the same scenarios, measured
// now, with the same code the tests assert on (tests/scenarios.cpp).
#include <signal.h>

#include <exception>
#include <iostream>

#include "scenarios.hpp"
#include "testkit/scoreboard.hpp"
#include "testkit/tour.hpp"

using namespace ch02;
using namespace testkit;

namespace {

std::string ms(long long v) { return std::to_string(v) + " ms"; }

// Progress on a terminal, and the stop on Ctrl-C/SIGTERM (testkit/tour.hpp).
testkit::TourRuntime* tour = nullptr;

std::vector<Cell> row(const std::string& name) {
  tour->stage(name);
  tour->scenario("SIGTERM while background writes are pending");
  // A: 15 requests acknowledged, SIGTERM while their writes are pending, 5 more.
  auto a = sigterm_with_pending_writes(name);
  const auto& rep = a.report;
  Cell counts = info(std::to_string(rep.sent) + "/" + std::to_string(rep.acknowledged) + "/" +
                     std::to_string(rep.persisted) + "/" + std::to_string(rep.lost));
  Cell sigterm = a.stop.exited_ok() ? right("exit 0 in " + ms(a.stop.stop_ms)) : wrong(a.stop.str());
  Cell lost = verdict(rep.lost == 0 && rep.redis_error.empty(), std::to_string(rep.lost) + " lost");

  // B: SIGTERM while a request is inside its handler.
  tour->scenario("SIGTERM while a request is in its handler");
  auto b = sigterm_with_request_in_flight(name);
  // F: 2 worker threads held by idle keep-alive clients, 6 requests queued.
  tour->scenario("more keep-alive clients than threads");
  auto q = sigterm_with_queued_connections(name, 2, 2, 6);
  Cell errors = verdict(b.response.ok() && q.answered == 6,
                        "in-flight: " + b.response.str() + ", queued: " + std::to_string(q.answered) + "/6 answered");

  // D: a handler that never returns.
  tour->scenario("a handler that never returns");
  auto d = sigterm_with_stuck_handler(name);
  Cell bounded = wrong("hangs, 2nd signal ignored");
  if (d.stop.status && d.stop.status->killed_by(SIGTERM)) {
    bounded = right("killed at once");
  } else if (d.stop.status && d.second_signal_sent) {
    bounded = wrong(std::string("hangs; 2nd signal: ") + d.stop.str() + (d.stuck_reported ? ", id reported" : ""));
  } else if (d.stop.status) {
    bounded = verdict(d.stuck_reported, d.stop.str() + " at " + ms(d.stop.stop_ms) +
                                                (d.cancelled_reported ? ", id cancelled"
                                                 : d.stuck_reported   ? ", id abandoned"
                                                                      : ", nothing reported"));
  }

  // C: readiness and keep-alive connections during the stop.
  tour->scenario("readiness and keep-alive connections");
  auto c = stop_taking_traffic(name);
  Cell traffic = right("503 first, keep-alive closed");
  if (!c.right())
    traffic = wrong("refused after " + ms(c.refused_after_ms) + (c.readiness_503 ? ", 503" : ", no 503") +
                    (c.keep_alive_after_close.ok() ? ", keep-alive served after close" : ""));
  return {counts, sigterm, lost, errors, bounded, traffic};
}

}  // namespace

int main(int argc, char**) {
  testkit::TourRuntime runtime("02-http-shutdown");
  tour = &runtime;
  if (argc != 1) {
    std::cerr << "usage: 02-http-shutdown-tour\n";
    return 2;
  }
  try {
    Scoreboard board("02-http-shutdown: /incr traffic, SIGTERM while background writes are pending",
                     {"sent/acked/persisted/lost", "handles SIGTERM", "no lost work", "no errors to clients",
                      "bounded", "stops taking traffic first"});
    for (const auto& name : kStages) board.add_row(name, row(name));
    board.add_note("sent/acked/persisted/lost: 20 requests, SIGTERM after the first 15 were acknowledged.");
    board.add_note("bounded: a handler that never returns; 036 to 050 have a 2 s deadline and report the id.");
    board.add_note("010 is bounded only because SIGTERM kills it, with everything in flight.");
    board.add_note("queued: 8 keep-alive clients, 2 threads; 6 requests wait for a worker at SIGTERM.");
    runtime.clear();
    std::cout << board.render();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "02-http-shutdown tour failed: " << e.what() << "\n";
    return 1;
  }
}
