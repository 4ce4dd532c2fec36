// The stages between 020 and 030, one idea each (023 a deadline, 025
// handlers that look at IsCancelled(), 027 the cut-off reported), and the
// callback API's version of 025 beside them (025a: a reactor that never
// calls Finish(); 025b: one that finishes on OnCancel). Every cell of their
// README rows is one of these tests; the property checks are the same ones
// stages_test.cpp runs on 020 and 030.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <optional>
#include <thread>

#include "scenarios.hpp"

using namespace grpcstop;
using std::chrono::milliseconds;

namespace {

std::string bin(const Stage& s) { return std::string(CHAPTER_BIN_DIR) + "/" + s.name; }

// Allowed between the deadline and the process's exit: gRPC's teardown after
// Shutdown() returns, joining threads, destructors. Up to 1.3 s of it was
// measured at a load average of 22 on two cores; a stage that is not bounded
// takes far longer (the long Work below lasts budget + this + 2 s).
milliseconds exit_slack() { return std::max(teardown_slack(), milliseconds(1500)); }

StopReport under_load(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  StopReport r = run_stop_scenario(bin(s), redis, s.args, under_load_options());
  INFO(render(r));
  REQUIRE(r.started.size() >= 10);  // the signal really came with work in flight
  return r;
}

StopReport open_stream(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  return run_stop_scenario(bin(s), redis, s.args, open_stream_options(s));
}

void require_handles_sigterm(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->ok());
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage(prefix).budget + exit_slack()));
}

void require_no_lost_work(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE(r.in_flight.size() == 10);
  for (auto& id : r.in_flight) CHECK(r.persisted.count(id) == 1);
  REQUIRE(r.abandoned().empty());
  REQUIRE(r.lost().empty());
}

void require_unannounced_unavailable(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE(r.failed() > 0);
  REQUIRE(r.failed_by_code().count("UNAVAILABLE") == 1);
  REQUIRE_FALSE(r.not_serving_after);
}

void require_never_announced(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE_FALSE(r.not_serving_after);
  REQUIRE(r.load.not_sent == 0);
}

// One Work far longer than the deadline, SIGTERM once it runs on the server.
struct LongWork {
  std::optional<testkit::ExitStatus> exit;  // nullopt: still running at the bound, killed
  milliseconds exit_after{0};               // SIGTERM -> exit
  milliseconds work_ms{0};
  RpcResult rpc;
  bool persisted = false;
  std::string transcript;
};

LongWork long_work_at_deadline(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  LongWork w;
  // Longer than anything a bounded stop may take, on any machine.
  w.work_ms = testkit::scaled(*s.budget + exit_slack()) + milliseconds(2000);
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  std::thread caller([&] { w.rpc = work(*channel, "long-1", w.work_ms.count(), w.work_ms + milliseconds(10'000)); });
  server.process().expect_line("work: started id=long-1", milliseconds(5000));
  auto signalled = server.process().send_signal(SIGTERM);
  w.exit = server.process().wait_exit(w.work_ms + milliseconds(5000));
  if (w.exit)
    w.exit_after = std::chrono::duration_cast<milliseconds>(server.process().exit_time() - signalled);
  else
    server.process().kill();
  caller.join();
  w.persisted = redis.client().smembers("work:done").count("long-1") == 1;
  w.transcript = server.process().transcript();
  return w;
}

// A long Work is cut off at the deadline: the stop is bounded, the client
// was told UNAVAILABLE, and the work is not done behind its back.
void require_long_work_cut_off_not_persisted(const std::string& prefix) {
  LongWork w = long_work_at_deadline(prefix);
  INFO(w.transcript << "client: " << code_name(w.rpc.code) << " " << w.rpc.message);
  REQUIRE(w.exit);
  REQUIRE(w.exit_after <= testkit::scaled(*stage(prefix).budget + exit_slack()));
  REQUIRE(w.rpc.code == grpc::StatusCode::UNAVAILABLE);
  REQUIRE_FALSE(w.persisted);
  REQUIRE(w.transcript.find("work id=long-1 not persisted") != std::string::npos);
}

// With a stream open and a long budget, the first SIGTERM starts the stop;
// a second one, sent once the stage said it took the first, changes nothing.
void require_second_signal_ignored(const std::string& prefix) {
  testkit::RedisServer redis;
  Server server(bin(stage(prefix)), redis.address(), {"--shutdown-timeout-ms", "60000"});
  auto channel = channel_to({server.target()});
  TickStream stream(channel, "stream-1");
  server.process().expect_line("stream: opened", milliseconds(5000));
  server.process().send_signal(SIGTERM);
  server.process().expect_line("shutdown: SIGTERM received", milliseconds(5000));
  server.process().send_signal(SIGTERM);
  REQUIRE_FALSE(server.process().wait_exit(milliseconds(1000)));
  REQUIRE(server.process().out().find("shutdown: complete") == std::string::npos);
  server.process().kill();
}

// The stream is cut off at the deadline, in time; but the exit status is 0
// and nothing names what was cut.
void require_cut_off_in_time_but_unreported(const std::string& prefix) {
  StopReport r = open_stream(prefix);
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(*r.shutdown_time >= *stage(prefix).budget - milliseconds(50));
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage(prefix).budget + exit_slack()));
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
  REQUIRE(r.exit->ok());                                    // "all went well"
  REQUIRE(r.server_err.find("abandoned:") == std::string::npos);  // and nothing says otherwise
}

}  // namespace

// ------------------------------------------------------------------ 023

TEST_CASE("023 deadline handles SIGTERM: exit 0 once the RPCs in flight are done") { require_handles_sigterm("023"); }

TEST_CASE("023 deadline no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work("023");
}

TEST_CASE("023 deadline no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  require_unannounced_unavailable("023");
}

TEST_CASE("023 deadline bounded: an open stream ends at the deadline (its loop looks at IsCancelled())") {
  StopReport r = open_stream("023");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->ok());
  REQUIRE(*r.shutdown_time >= milliseconds(1000) - milliseconds(50));
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage("023").budget + exit_slack()));
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("023 deadline bounded: no, a Work longer than the deadline holds Shutdown(deadline) until it returns, then is persisted although its client was told UNAVAILABLE") {
  LongWork w = long_work_at_deadline("023");
  INFO(w.transcript << "client: " << code_name(w.rpc.code) << " " << w.rpc.message);
  REQUIRE(w.exit);
  // The handler slept through the deadline: the stop took as long as the work.
  REQUIRE(w.exit_after > testkit::scaled(*stage("023").budget + exit_slack()));
  REQUIRE(w.exit_after >= w.work_ms - milliseconds(1000));
  // Its client was told at the deadline that it failed...
  REQUIRE(w.rpc.code == grpc::StatusCode::UNAVAILABLE);
  // ...and the work was done anyway: a retry would do it twice.
  REQUIRE(w.persisted);
}

TEST_CASE("023 deadline bounded: no, a second SIGTERM does nothing while Shutdown() waits") {
  require_second_signal_ignored("023");
}

TEST_CASE("023 deadline stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced("023");
}

// ------------------------------------------------------------------ 025, and 025a/025b beside it

TEST_CASE("025 cancellable-handlers handles SIGTERM: exit 0 once the RPCs in flight are done") {
  require_handles_sigterm("025-");
}
TEST_CASE("025a reactor-never-finishes handles SIGTERM: exit 0 once the RPCs in flight are done") {
  require_handles_sigterm("025a");
}
TEST_CASE("025b reactor-finishes-on-cancel handles SIGTERM: exit 0 once the RPCs in flight are done") {
  require_handles_sigterm("025b");
}

TEST_CASE("025 cancellable-handlers no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work("025-");
}
TEST_CASE("025a reactor-never-finishes no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work("025a");
}
TEST_CASE("025b reactor-finishes-on-cancel no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work("025b");
}

TEST_CASE("025 cancellable-handlers no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  require_unannounced_unavailable("025-");
}
TEST_CASE("025a reactor-never-finishes no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  require_unannounced_unavailable("025a");
}
TEST_CASE("025b reactor-finishes-on-cancel no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  require_unannounced_unavailable("025b");
}

TEST_CASE("025 cancellable-handlers bounded: a Work longer than the deadline is cut off at it and not persisted") {
  require_long_work_cut_off_not_persisted("025-");
}
TEST_CASE("025b reactor-finishes-on-cancel bounded: a Work longer than the deadline is cut off at it and not persisted") {
  require_long_work_cut_off_not_persisted("025b");
}

TEST_CASE("025 cancellable-handlers bounded: an open stream is cut off at the deadline, but exit 0 and nothing says so") {
  require_cut_off_in_time_but_unreported("025-");
}
TEST_CASE("025b reactor-finishes-on-cancel bounded: an open stream is cut off at the deadline, but exit 0 and nothing says so") {
  require_cut_off_in_time_but_unreported("025b");
}

TEST_CASE("025a reactor-never-finishes bounded: no, a stream cancelled at the deadline is never finished, so Shutdown(deadline) never returns") {
  StopReport r = open_stream("025a");
  INFO(render(r));
  // Bounded proof of a hang: run_stop_scenario waited budget + 1 s, then
  // killed it. The stream itself was cancelled at the deadline (the client
  // has its UNAVAILABLE); what holds Shutdown() is the call that was never
  // finished on the server.
  REQUIRE(r.hung());
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
  REQUIRE(r.server_out.find("stream: cancelled id=stream-1") != std::string::npos);
  REQUIRE(r.server_out.find("shutdown: complete") == std::string::npos);
}

TEST_CASE("025 cancellable-handlers bounded: no, a second SIGTERM does nothing while Shutdown() waits") {
  require_second_signal_ignored("025-");
}
TEST_CASE("025a reactor-never-finishes bounded: no, a second SIGTERM does nothing while Shutdown() waits") {
  require_second_signal_ignored("025a");
}
TEST_CASE("025b reactor-finishes-on-cancel bounded: no, a second SIGTERM does nothing while Shutdown() waits") {
  require_second_signal_ignored("025b");
}

TEST_CASE("025 cancellable-handlers stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced("025-");
}
TEST_CASE("025a reactor-never-finishes stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced("025a");
}
TEST_CASE("025b reactor-finishes-on-cancel stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced("025b");
}

// ------------------------------------------------------------------ 027

TEST_CASE("027 report-cut-off handles SIGTERM: exit 0 once the RPCs in flight are done") {
  require_handles_sigterm("027");
}

TEST_CASE("027 report-cut-off no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work("027");
}

TEST_CASE("027 report-cut-off no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  require_unannounced_unavailable("027");
}

TEST_CASE("027 report-cut-off bounded: an open stream is cut off at the deadline and reported, exit 1") {
  StopReport r = open_stream("027");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->exited);
  REQUIRE(r.exit->code == 1);  // bounded, but not everything finished: say so
  REQUIRE(*r.shutdown_time >= milliseconds(1000) - milliseconds(50));
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage("027").budget + exit_slack()));
  REQUIRE(r.server_err.find("abandoned: stream id=stream-1") != std::string::npos);
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("027 report-cut-off bounded: a Work longer than the deadline is cut off, reported by id, not persisted, exit 1") {
  LongWork w = long_work_at_deadline("027");
  INFO(w.transcript << "client: " << code_name(w.rpc.code) << " " << w.rpc.message);
  REQUIRE(w.exit);
  REQUIRE(w.exit->exited);
  REQUIRE(w.exit->code == 1);
  REQUIRE(w.exit_after <= testkit::scaled(*stage("027").budget + exit_slack()));
  REQUIRE(w.rpc.code == grpc::StatusCode::UNAVAILABLE);
  REQUIRE_FALSE(w.persisted);
  REQUIRE(w.transcript.find("abandoned: work id=long-1 not persisted") != std::string::npos);
}

TEST_CASE("027 report-cut-off bounded: no, a second SIGTERM does nothing while Shutdown() waits") {
  require_second_signal_ignored("027");
}

TEST_CASE("027 report-cut-off stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced("027");
}

// ------------------------------------------------------------------ 025a/025b: a Work whose client gave up

namespace {

// A Work of 5 s whose client gives up after 300 ms (its own deadline), long
// before any stop; then SIGTERM with nothing else running. Returns the exit
// status, or nullopt when the stage was still running at budget + 1 s.
std::optional<testkit::ExitStatus> stop_after_a_client_gave_up(const std::string& prefix, std::string* transcript) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  RpcResult r = work(*channel, "given-up-1", 5000, milliseconds(300));
  INFO(code_name(r.code) << " " << r.message);
  REQUIRE(r.code == grpc::StatusCode::DEADLINE_EXCEEDED);
  server.process().expect_line("cancelled: work id=given-up-1 not persisted", milliseconds(5000));
  channel.reset();  // and the client goes away: no connection is left to wait for
  server.process().send_signal(SIGTERM);
  auto status = server.process().wait_exit(*s.budget + milliseconds(1000));
  if (!status) server.process().kill();
  *transcript = server.process().transcript();
  REQUIRE(redis.client().smembers("work:done").count("given-up-1") == 0);
  return status;
}

}  // namespace

TEST_CASE("025a reactor-never-finishes bounded: no, a Work whose client gave up is never finished, and the next stop waits for it for ever") {
  std::string transcript;
  auto status = stop_after_a_client_gave_up("025a", &transcript);
  INFO(transcript);
  REQUIRE_FALSE(status);  // no call running, nothing to wait for: yet it never exits
}

TEST_CASE("025b reactor-finishes-on-cancel bounded: a Work whose client gave up is finished at once, and the next stop does not wait for it") {
  std::string transcript;
  auto status = stop_after_a_client_gave_up("025b", &transcript);
  INFO(transcript);
  REQUIRE(status);
  REQUIRE(status->ok());
}
