// One test per stage and property of the chapter's stage table (README.md),
// including every property a stage gets wrong.
#include <signal.h>

#include <catch2/catch.hpp>
#include <set>

#include "scenarios.hpp"

using namespace ch02;
using namespace std::chrono_literals;
using testkit::scaled;

namespace {

long long bound_ms(long long base) { return scaled(milliseconds(base)).count(); }

// Ids acknowledged before the signal: r00 .. r14 (see scenario A).
std::vector<std::string> acked_before_signal(const PendingWrites& o) {
  return {o.report.acked_ids.begin(), o.report.acked_ids.begin() + std::min<std::size_t>(15, o.report.acked_ids.size())};
}

}  // namespace

// --- handles SIGTERM ---------------------------------------------------------

TEST_CASE("010 naive: SIGTERM kills it (no exit status of its own)") {
  auto o = sigterm_with_pending_writes("010-naive-exit");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK(o.stop.status->killed_by(SIGTERM));
}

TEST_CASE("020 stop-on-signal: SIGTERM stops the server and it exits 0") {
  auto o = sigterm_with_pending_writes("020-stop-on-signal");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(3000));
}

TEST_CASE("030 track: SIGTERM stops it and it exits 0 once the pending writes are done") {
  auto o = sigterm_with_pending_writes("030-track-background-work");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
}

TEST_CASE("033 second-signal: SIGTERM stops it and it exits 0 once the pending writes are done") {
  auto o = sigterm_with_pending_writes("033-second-signal");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
}

TEST_CASE("036 hard-deadline: SIGTERM stops it and it exits 0 within its deadline") {
  auto o = sigterm_with_pending_writes("036-hard-deadline");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
}

TEST_CASE("040 deadline: SIGTERM stops it and it exits 0 within its deadline") {
  auto o = sigterm_with_pending_writes("040-shutdown-deadline");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
}

TEST_CASE("045 close-idle: SIGTERM stops it and it exits 0 within its deadline") {
  auto o = sigterm_with_pending_writes("045-close-idle-connections");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
}

TEST_CASE("050 drain-first: SIGTERM stops it and it exits 0 after the drain delay and the pending writes") {
  auto o = sigterm_with_pending_writes("050-drain-first");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(4000));
  CHECK_THAT(o.stop.transcript, Catch::Contains("shutdown: complete"));
}

// --- no lost work --------------------------------------------------------------

TEST_CASE("010 naive: writes acknowledged before SIGTERM are lost, by id") {
  auto o = sigterm_with_pending_writes("010-naive-exit");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  for (const auto& id : acked_before_signal(o)) {
    INFO(id);
    CHECK(std::find(o.report.lost_ids.begin(), o.report.lost_ids.end(), id) != o.report.lost_ids.end());
  }
}

TEST_CASE("020 stop-on-signal: background writes acknowledged before SIGTERM are lost, with exit 0") {
  auto o = sigterm_with_pending_writes("020-stop-on-signal");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.stop.exited_ok());  // and yet:
  for (const auto& id : acked_before_signal(o)) {
    INFO(id);
    CHECK(std::find(o.report.lost_ids.begin(), o.report.lost_ids.end(), id) != o.report.lost_ids.end());
  }
}

TEST_CASE("030 track: every write acknowledged before SIGTERM is persisted") {
  auto o = sigterm_with_pending_writes("030-track-background-work");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.persisted == o.report.acknowledged);
  CHECK(o.report.duplicated == 0);
}

TEST_CASE("033 second-signal: every write acknowledged before SIGTERM is persisted") {
  auto o = sigterm_with_pending_writes("033-second-signal");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.persisted == o.report.acknowledged);
}

TEST_CASE("036 hard-deadline: every write acknowledged before SIGTERM is persisted") {
  auto o = sigterm_with_pending_writes("036-hard-deadline");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.persisted == o.report.acknowledged);
}

TEST_CASE("040 deadline: every write acknowledged before SIGTERM is persisted") {
  auto o = sigterm_with_pending_writes("040-shutdown-deadline");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.persisted == o.report.acknowledged);
}

TEST_CASE("045 close-idle: every write acknowledged before SIGTERM is persisted") {
  auto o = sigterm_with_pending_writes("045-close-idle-connections");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.persisted == o.report.acknowledged);
}

TEST_CASE("050 drain-first: every write acknowledged, before SIGTERM or while draining, is persisted") {
  auto o = sigterm_with_pending_writes("050-drain-first");
  INFO(o.stop.transcript << o.report.render({}));
  REQUIRE(o.acked_before_signal == 15);
  CHECK(o.report.lost == 0);
  CHECK(o.report.acknowledged == 20);  // the 5 sent after SIGTERM were served by the drain
  CHECK(o.report.persisted == 20);
}

// --- no errors to clients ------------------------------------------------------

TEST_CASE("010 naive: a request inside its handler at SIGTERM gets no response (reset)") {
  auto o = sigterm_with_request_in_flight("010-naive-exit");
  INFO(o.stop.transcript);
  CHECK(o.response.status == 0);
  CHECK(o.response.error == "reset");
}

TEST_CASE("020 stop-on-signal: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("020-stop-on-signal");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("030 track: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("030-track-background-work");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("033 second-signal: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("033-second-signal");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("036 hard-deadline: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("036-hard-deadline");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("040 deadline: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("040-shutdown-deadline");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("045 close-idle: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("045-close-idle-connections");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

TEST_CASE("050 drain-first: a request inside its handler at SIGTERM gets its 200") {
  auto o = sigterm_with_request_in_flight("050-drain-first");
  INFO(o.stop.transcript);
  CHECK(o.response.str() == "200");
  CHECK(o.stop.exited_ok());
}

// --- bounded -------------------------------------------------------------------

TEST_CASE("010 naive: bounded only because SIGTERM kills it at once, stuck handler and all") {
  auto o = sigterm_with_stuck_handler("010-naive-exit");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK(o.stop.status->killed_by(SIGTERM));
  CHECK_FALSE(o.second_signal_sent);
}

TEST_CASE("020 stop-on-signal: a handler that never returns keeps it running, and a second SIGTERM is ignored") {
  auto o = sigterm_with_stuck_handler("020-stop-on-signal");
  INFO(o.stop.transcript);
  CHECK(o.second_signal_sent);
  CHECK_FALSE(o.stop.status);  // still running after both signals: SIGKILLed by the test
}

TEST_CASE("030 track: a handler that never returns keeps it running, and a second SIGTERM is ignored") {
  auto o = sigterm_with_stuck_handler("030-track-background-work");
  INFO(o.stop.transcript);
  CHECK(o.second_signal_sent);
  CHECK_FALSE(o.stop.status);
}

TEST_CASE("033 second-signal: a handler that never returns keeps it running until a second SIGTERM forces exit 1, naming the id") {
  auto o = sigterm_with_stuck_handler("033-second-signal");
  INFO(o.stop.transcript);
  CHECK(o.second_signal_sent);  // the first one alone did not end it
  REQUIRE(o.stop.status);
  CHECK(o.stop.status->exited);
  CHECK(o.stop.status->code == 1);
  CHECK_THAT(o.stop.transcript, Catch::Contains("abandoned: id=stuck"));
}

TEST_CASE("036 hard-deadline: a handler that would never return is abandoned at the deadline, not cancelled, reported by id, exit 1") {
  auto o = sigterm_with_stuck_handler("036-hard-deadline");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK_FALSE(o.second_signal_sent);
  CHECK(o.stop.status->exited);
  CHECK(o.stop.status->code == 1);
  CHECK(o.stop.stop_ms >= o.deadline_ms - 50);  // nothing asked it to stop earlier
  CHECK(o.stop.stop_ms < o.deadline_ms + bound_ms(1000));
  CHECK(o.stuck_reported);
  CHECK_FALSE(o.cancelled_reported);
}

TEST_CASE("040 deadline: a handler that would never return is cancelled at the deadline, reported by id, exit 1") {
  auto o = sigterm_with_stuck_handler("040-shutdown-deadline");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK_FALSE(o.second_signal_sent);
  CHECK(o.stop.status->exited);
  CHECK(o.stop.status->code == 1);
  CHECK(o.stop.stop_ms >= o.deadline_ms * 9 / 10 - 50);  // cancelled in the deadline's last tenth
  CHECK(o.stop.stop_ms < o.deadline_ms + bound_ms(1000));
  CHECK(o.cancelled_reported);
}

TEST_CASE("045 close-idle: a handler that would never return is cancelled at the deadline, reported by id, exit 1") {
  auto o = sigterm_with_stuck_handler("045-close-idle-connections");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK_FALSE(o.second_signal_sent);
  CHECK(o.stop.status->code == 1);
  CHECK(o.stop.stop_ms >= o.deadline_ms * 9 / 10 - 50);  // cancelled in the deadline's last tenth
  CHECK(o.stop.stop_ms < o.deadline_ms + bound_ms(1000));
  CHECK(o.cancelled_reported);
}

TEST_CASE("050 drain-first: a handler that would never return is cancelled at the deadline, reported by id, exit 1") {
  auto o = sigterm_with_stuck_handler("050-drain-first");
  INFO(o.stop.transcript);
  REQUIRE(o.stop.status);
  CHECK_FALSE(o.second_signal_sent);
  CHECK(o.stop.status->code == 1);
  CHECK(o.stop.stop_ms >= o.deadline_ms * 9 / 10 - 50);  // cancelled in the deadline's last tenth
  CHECK(o.stop.stop_ms < o.deadline_ms + bound_ms(1000));
  CHECK(o.cancelled_reported);
}

// --- stops taking traffic first ------------------------------------------------

TEST_CASE("010 naive: refuses new connections at once, SIGTERM just kills it") {
  auto o = stop_taking_traffic("010-naive-exit");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // the load balancer's traffic is refused at once
  CHECK_FALSE(o.right());
}

TEST_CASE("020 stop-on-signal: refuses new connections at once (no 503 first), and an idle keep-alive connection is still served after it closed") {
  auto o = stop_taking_traffic("020-stop-on-signal");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK(o.keep_alive_after_close.str() == "200");
}

TEST_CASE("030 track: refuses new connections at once (no 503 first), and an idle keep-alive connection is still served after it closed") {
  auto o = stop_taking_traffic("030-track-background-work");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK(o.keep_alive_after_close.str() == "200");
}

TEST_CASE("033 second-signal: refuses new connections at once (no 503 first), and an idle keep-alive connection is still served after it closed") {
  auto o = stop_taking_traffic("033-second-signal");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK(o.keep_alive_after_close.str() == "200");
}

TEST_CASE("036 hard-deadline: refuses new connections at once (no 503 first), and an idle keep-alive connection is still served after it closed") {
  auto o = stop_taking_traffic("036-hard-deadline");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK(o.keep_alive_after_close.str() == "200");
}

TEST_CASE("040 deadline: refuses new connections at once (no 503 first), and an idle keep-alive connection is still served after it closed") {
  auto o = stop_taking_traffic("040-shutdown-deadline");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK(o.keep_alive_after_close.str() == "200");
}

TEST_CASE("045 close-idle: refuses new connections at once (no 503 first), but closes the idle keep-alive connection") {
  auto o = stop_taking_traffic("045-close-idle-connections");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= 0);
  CHECK(o.refused_after_ms < lb_lag().count());  // refused while the load balancer still sends
  CHECK_FALSE(o.readiness_503);
  CHECK_FALSE(o.keep_alive_after_close.ok());
  CHECK(o.stop.exited_ok());
}

TEST_CASE("050 drain-first: /readyz says 503 while requests are still served, and idle keep-alive connections are closed") {
  auto o = stop_taking_traffic("050-drain-first");
  INFO(o.stop.transcript);
  CHECK(o.refused_after_ms >= lb_lag().count());  // answered for the load balancer's whole lag
  CHECK(o.readiness_503);
  CHECK(o.served_while_draining);
  CHECK_FALSE(o.keep_alive_after_close.ok());
  CHECK(o.stop.exited_ok());
}

// --- the keep-alive timeout, shown and fixed -----------------------------------

TEST_CASE("040 deadline: an idle keep-alive connection holds the exit for cpp-httplib's 5 s keep-alive timeout") {
  auto o = sigterm_with_idle_keep_alive("040-shutdown-deadline");
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  // The library's 5 s count from the connection's last response: a lower
  // bound, which slow machines and sanitizers cannot make shorter.
  CHECK(o.idle_ms >= 4900);
}

TEST_CASE("045 and 050: an idle keep-alive connection is closed at once and the exit is prompt") {
  auto name = GENERATE(as<std::string>{}, "045-close-idle-connections", "050-drain-first");
  INFO(name);
  auto o = sigterm_with_idle_keep_alive(name);
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());
  CHECK(o.stop.stop_ms < bound_ms(1000));
}

TEST_CASE("050 drain-first: responses sent while draining carry one Connection: close and the connection really closes") {
  testkit::RedisServer redis;
  // The deadline includes the drain (the stage refuses a drain that is not
  // shorter), and both are scaled.
  auto r = start("050-drain-first", redis,
                 {"--work-ms", "0", "--drain-delay-ms", std::to_string(bound_ms(3000)), "--shutdown-timeout-ms",
                  std::to_string(2 * bound_ms(3000))});
  KeepAlive keep(r.port);
  CHECK(keep.get("/healthz").connection != "close");
  r.process->send_signal(SIGTERM);
  r.process->expect_line("shutdown: readiness 503", 5s);
  // A keep-alive request (HTTP/1.1, no Connection header) while draining:
  // the answer says close, once, and the server closes after it (RFC 9112
  // section 9.6), instead of waiting for a next request on it.
  const auto raw = exchange_until_close(r.port, "GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n", 2000ms);
  REQUIRE(raw);
  INFO(*raw);
  CHECK(raw->rfind("HTTP/1.1 503", 0) == 0);
  CHECK(raw->find("Connection: close\r\n") != std::string::npos);
  CHECK(raw->find("Connection:") == raw->rfind("Connection:"));  // one header
  CHECK(raw->find("Keep-Alive:") == std::string::npos);           // no contradiction
  auto incr = post(r.port, "/incr?id=draining");
  CHECK(incr.status == 200);
  CHECK(incr.connection == "close");
  CHECK(r.process->expect_exit(10s).ok());
  CHECK(redis.client().smembers("incr:ids") == std::set<std::string>{"draining"});
}

// --- second signal ---------------------------------------------------------------

TEST_CASE("033 to 050: a second SIGTERM during the graceful stop forces exit 1 and reports what it abandons") {
  auto name = GENERATE(as<std::string>{}, "033-second-signal", "036-hard-deadline", "040-shutdown-deadline",
                       "045-close-idle-connections", "050-drain-first");
  INFO(name);
  testkit::RedisServer redis;
  std::vector<std::string> extra = {"--work-ms", "0", "--handler-ms", "60000", "--trace"};
  if (has_deadline(name)) extra.insert(extra.end(), {"--shutdown-timeout-ms", "60000"});
  auto r = start(name, redis, extra);
  std::thread client([&] { post(r.port, "/incr?id=stuck", 70s); });
  r.process->expect_line("incr: id=stuck started", 5s);
  r.process->send_signal(SIGTERM);
  r.process->expect_line("send it again to force the exit", 5s);  // the first one was taken
  const auto t = r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(5s);
  client.join();
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  CHECK(std::chrono::duration_cast<milliseconds>(r.process->exit_time() - t).count() < bound_ms(1000));
  CHECK_THAT(r.process->out(), Catch::Contains("second SIGTERM"));
  CHECK_THAT(r.process->err(), Catch::Contains("abandoned: id=stuck"));
}

TEST_CASE("033 to 050: a SIGINT after the SIGTERM was taken forces exit 1 too, with no window that merges them") {
  auto name = GENERATE(as<std::string>{}, "033-second-signal", "036-hard-deadline", "040-shutdown-deadline",
                       "045-close-idle-connections", "050-drain-first");
  INFO(name);
  testkit::RedisServer redis;
  std::vector<std::string> extra = {"--work-ms", std::to_string(bound_ms(5000))};
  if (has_deadline(name)) extra.insert(extra.end(), {"--shutdown-timeout-ms", "60000"});
  auto r = start(name, redis, extra);
  REQUIRE(post(r.port, "/incr?id=pending").ok());  // its write waits --work-ms
  r.process->send_signal(SIGTERM);
  r.process->expect_line("send it again to force the exit", 5s);
  r.process->send_signal(SIGINT);  // at once: still the second signal
  auto st = r.process->expect_exit(5s);
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  CHECK_THAT(r.process->out(), Catch::Contains("second SIGINT"));
  CHECK_THAT(r.process->err(), Catch::Contains("abandoned: id=pending"));
}

// --- every request answered or never executed ---------------------------------

TEST_CASE("045 and 050: a request racing the idle-connection close is either answered or never executed") {
  auto name = GENERATE(as<std::string>{}, "045-close-idle-connections", "050-drain-first");
  INFO(name);
  auto o = race_idle_close(name, 150, 4);
  INFO(o.last_transcript);
  INFO("rounds " << o.rounds << ", sent " << o.sent << ", answered " << o.answered);
  REQUIRE(o.rounds >= 50);  // hundreds of races, within the time budget
  CHECK(o.unanswered_ran == std::vector<std::string>{});
  CHECK(o.answered_lost == std::vector<std::string>{});
}

TEST_CASE("020 to 040: with more keep-alive clients than threads, requests queued before SIGTERM are dropped unread, with exit 0") {
  auto name = GENERATE(as<std::string>{}, "020-stop-on-signal", "030-track-background-work", "033-second-signal",
                       "036-hard-deadline", "040-shutdown-deadline");
  INFO(name);
  auto o = sigterm_with_queued_connections(name, 2, 2, 6);
  INFO(o.stop.transcript);
  CHECK(o.stop.exited_ok());  // and yet:
  CHECK(o.answered < 6);
  CHECK(o.persisted == o.answered);
}

TEST_CASE("045 and 050: with 4x more keep-alive clients than threads, every request sent before SIGTERM is answered") {
  auto name = GENERATE(as<std::string>{}, "045-close-idle-connections", "050-drain-first");
  INFO(name);
  auto o = sigterm_with_queued_connections(name, 2, 2, 6);
  INFO(o.stop.transcript);
  for (const auto& h : o.responses) CHECK(h.str() == "200");
  CHECK(o.answered == 6);
  CHECK(o.persisted == 6);
  CHECK(o.stop.exited_ok());
}
