// One test per stage x property of the chapter's table (README.md). Each
// spawns the real stage binary against a real redis-server, drives it with
// real gRPC calls, and signals it at a moment the server itself reported
// (N Work RPCs running, a stream open). Wrong stages are proven wrong.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "scenarios.hpp"
#include "testkit/stage.hpp"

using namespace grpcstop;
using std::chrono::milliseconds;

namespace {

std::string bin(const Stage& s) { return testkit::stage_binary(CHAPTER_BIN_DIR, s.name); }

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

void require_handles_sigterm(const StopReport& r, milliseconds budget) {
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->ok());
  REQUIRE(*r.shutdown_time <= testkit::scaled(budget));
}

void require_no_lost_work(const StopReport& r) {
  INFO(render(r));
  REQUIRE(r.in_flight.size() == 10);
  for (auto& id : r.in_flight) CHECK(r.persisted.count(id) == 1);
  REQUIRE(r.abandoned().empty());
  REQUIRE(r.lost().empty());
}

void require_never_announced(const StopReport& r) {
  INFO(render(r));
  REQUIRE_FALSE(r.not_serving_after);
  REQUIRE(r.load.not_sent == 0);
}

}  // namespace

// ------------------------------------------------------------------ 010

TEST_CASE("010 naive-exit handles SIGTERM: no, the default action kills it") {
  StopReport r = under_load("010");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->killed_by(SIGTERM));
}

TEST_CASE("010 naive-exit no lost work: RPCs running at SIGTERM are never persisted") {
  StopReport r = under_load("010");
  INFO(render(r));
  REQUIRE(r.in_flight.size() == 10);
  for (auto& id : r.in_flight) CHECK(r.persisted.count(id) == 0);
  // Every call running at SIGTERM was abandoned (one more may have started
  // between the tenth line and the signal: it is abandoned too).
  auto abandoned = r.abandoned();
  std::set<std::string> abandoned_set(abandoned.begin(), abandoned.end());
  for (auto& id : r.in_flight) CHECK(abandoned_set.count(id) == 1);
  REQUIRE(abandoned.size() >= r.in_flight.size());
  REQUIRE(r.lost().empty());  // nobody was told OK: the failure is visible, not silent
}

TEST_CASE("010 naive-exit no errors to clients: RPCs running at SIGTERM fail with UNAVAILABLE") {
  StopReport r = under_load("010");
  INFO(render(r));
  REQUIRE(r.in_flight.size() == 10);
  for (auto& rpc : r.load.rpcs)
    if (std::find(r.in_flight.begin(), r.in_flight.end(), rpc.id) != r.in_flight.end())
      CHECK(rpc.code == grpc::StatusCode::UNAVAILABLE);
  REQUIRE(r.ok() == 0);
}

TEST_CASE("010 naive-exit bounded: an open stream does not keep it alive (it dies at once)") {
  StopReport r = open_stream("010");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->killed_by(SIGTERM));
  REQUIRE(*r.shutdown_time <= testkit::scaled(milliseconds(300)));  // at once: no wait for the stream
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("010 naive-exit stops taking traffic first: no, health says SERVING until it dies") {
  require_never_announced(under_load("010"));
}

// ------------------------------------------------------------------ 020

TEST_CASE("020 shutdown-thread handles SIGTERM: Shutdown() on the signal thread, exit 0") {
  require_handles_sigterm(under_load("020"), milliseconds(3000));
}

TEST_CASE("020 shutdown-thread no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("020"));
}

TEST_CASE("020 shutdown-thread no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  StopReport r = under_load("020");
  INFO(render(r));
  for (auto& id : r.in_flight)  // the ones in flight are fine...
    for (auto& rpc : r.load.rpcs)
      if (rpc.id == id) CHECK(rpc.ok());
  // ...but the next ones are refused, and nothing warned the client.
  REQUIRE(r.failed() > 0);
  REQUIRE(r.failed_by_code().count("UNAVAILABLE") == 1);
  REQUIRE_FALSE(r.not_serving_after);
}

TEST_CASE("020 shutdown-thread bounded: no, an open stream makes Shutdown() wait forever, even after a second SIGTERM") {
  testkit::RedisServer redis;
  const Stage& s = stage("020");
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  TickStream stream(channel, "stream-1");
  server.process().expect_line("stream: opened", milliseconds(5000));
  server.process().send_signal(SIGTERM);
  server.process().expect_line("calling Shutdown()", milliseconds(5000));
  // Bounded proof of a hang: still running after 2 s, and a second SIGTERM
  // changes nothing for one more second. Then we end it ourselves.
  REQUIRE_FALSE(server.process().wait_exit(milliseconds(2000)));
  server.process().send_signal(SIGTERM);
  REQUIRE_FALSE(server.process().wait_exit(milliseconds(1000)));
  REQUIRE(stream.ticks() > 0);
  REQUIRE(server.process().out().find("shutdown: complete") == std::string::npos);
  server.process().kill();
}

TEST_CASE("020 shutdown-thread stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced(under_load("020"));
}

// ------------------------------------------------------------------ 030

TEST_CASE("030 shutdown-deadline handles SIGTERM: exit 0 once the RPCs in flight are done") {
  require_handles_sigterm(under_load("030"), *stage("030").budget + teardown_slack());
}

TEST_CASE("030 shutdown-deadline no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("030"));
}

TEST_CASE("030 shutdown-deadline no errors to clients: no, RPCs sent just after SIGTERM get UNAVAILABLE unannounced") {
  StopReport r = under_load("030");
  INFO(render(r));
  REQUIRE(r.failed() > 0);
  REQUIRE(r.failed_by_code().count("UNAVAILABLE") == 1);
  REQUIRE_FALSE(r.not_serving_after);
}

TEST_CASE("030 shutdown-deadline bounded: an open stream is cut off at the deadline and reported, exit 1") {
  StopReport r = open_stream("030");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->exited);
  REQUIRE(r.exit->code == 1);  // bounded, but not everything finished: say so
  REQUIRE(*r.shutdown_time >= milliseconds(1000));
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage("030").budget + teardown_slack()));
  REQUIRE(r.server_err.find("abandoned: stream id=stream-1") != std::string::npos);
  REQUIRE(r.stream_status.at(0).error_code() == grpc::StatusCode::UNAVAILABLE);
}

TEST_CASE("030 shutdown-deadline bounded: a second SIGTERM forces exit 1 at once") {
  testkit::RedisServer redis;
  const Stage& s = stage("030");
  Server server(bin(s), redis.address(), {"--shutdown-timeout-ms", "60000"});
  auto channel = channel_to({server.target()});
  TickStream stream(channel, "stream-1");
  server.process().expect_line("stream: opened", milliseconds(5000));
  server.process().send_signal(SIGTERM);
  server.process().expect_line("shutdown: SIGTERM received", milliseconds(5000));
  auto second = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(milliseconds(2000));
  REQUIRE(status.exited);
  REQUIRE(status.code == 1);
  REQUIRE(server.process().exit_time() - second < testkit::scaled(milliseconds(1000)));
  REQUIRE(server.process().err().find("second signal, forcing exit") != std::string::npos);
}

TEST_CASE("030 shutdown-deadline stops taking traffic first: no, health never says NOT_SERVING") {
  require_never_announced(under_load("030"));
}

// ------------------------------------------------------------------ 040

namespace {

// 040 and 050 share every property below; each test runs its own stage.
void require_health_aware_client_sees_no_failure(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE(r.failed() == 0);
  REQUIRE(r.ok() == static_cast<int>(r.load.rpcs.size()));
  REQUIRE(r.load.not_sent > 0);  // it held the rest back because it was told
}

void require_rolling_restart_with_retries_clean(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  LoadOptions load;
  load.rpcs = 100'000;  // an upper bound: the load stops when the restarts are done
  load.rate = 200;
  load.work_ms = 20;
  load.id_prefix = "roll";
  RollingReport r = run_rolling_restart(bin(s), redis, s.args, load);
  std::string failures;
  for (auto& [code, e] : r.failed_by_code()) failures += code + " x" + std::to_string(e.first) + ": " + e.second + "\n";
  INFO(failures);
  REQUIRE(r.exits.size() == 2);
  for (auto& e : r.exits) CHECK(e.ok());
  REQUIRE(r.load.rpcs.size() >= 100);  // two drains of 300 ms at 200/s
  REQUIRE(r.ok() == static_cast<int>(r.load.rpcs.size()));
  REQUIRE(r.lost().empty());
  REQUIRE(r.server_pids.size() >= 3);  // old and restarted servers both answered
}

void require_open_stream_cut_off(const std::string& prefix) {
  StopReport r = open_stream(prefix);
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->exited);
  REQUIRE(r.exit->code == 1);
  REQUIRE(*r.shutdown_time <= testkit::scaled(*stage(prefix).budget + teardown_slack()));
  REQUIRE(r.server_err.find("abandoned: stream id=stream-1") != std::string::npos);
}

void require_second_signal_during_drain_forces_exit(const std::string& prefix) {
  testkit::RedisServer redis;
  Server server(bin(stage(prefix)), redis.address(), {"--shutdown-timeout-ms", "60000", "--drain-ms", "30000"});
  server.process().send_signal(SIGTERM);
  server.process().expect_line("health NOT_SERVING", milliseconds(5000));
  auto second = server.process().send_signal(SIGINT);
  auto status = server.process().expect_exit(milliseconds(2000));
  REQUIRE(status.exited);
  REQUIRE(status.code == 1);
  REQUIRE(server.process().exit_time() - second < testkit::scaled(milliseconds(1000)));
}

void require_not_serving_first_and_still_serving(const std::string& prefix) {
  StopReport r = under_load(prefix);
  INFO(render(r));
  REQUIRE(r.not_serving_after);
  REQUIRE(*r.not_serving_after <= testkit::scaled(milliseconds(200)));

  // And directly: after the announcement a late RPC is still answered OK.
  testkit::RedisServer redis;
  Server server(bin(stage(prefix)), redis.address(), {"--shutdown-timeout-ms", "5000", "--drain-ms", "2000"});
  auto channel = channel_to({server.target()});
  REQUIRE(health(*channel) == "SERVING");
  server.process().send_signal(SIGTERM);
  server.process().expect_line("health NOT_SERVING", milliseconds(5000));
  REQUIRE(health(*channel) == "NOT_SERVING");
  RpcResult late = work(*channel, "late-1", 10);
  INFO(late.message);
  REQUIRE(late.ok());
  REQUIRE(redis.client().smembers("work:done").count("late-1") == 1);
  REQUIRE(server.process().expect_exit(milliseconds(8000)).ok());
}

}  // namespace

TEST_CASE("040 health-drain handles SIGTERM: exit 0 within its budget, drain included") {
  require_handles_sigterm(under_load("040"), *stage("040").budget + teardown_slack());
}

TEST_CASE("040 health-drain no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("040"));
}

TEST_CASE("040 health-drain no errors to clients: a health-aware client sees no failed RPC") {
  require_health_aware_client_sees_no_failure("040");
}

TEST_CASE("040 health-drain no errors to clients: round-robin with health checks and retries over two servers, each restarted, 0 failed") {
  require_rolling_restart_with_retries_clean("040");
}

TEST_CASE("040 health-drain bounded: an open stream is cut off at the deadline and reported, exit 1") {
  require_open_stream_cut_off("040");
}

TEST_CASE("040 health-drain bounded: a second SIGTERM during the drain forces exit 1 at once") {
  require_second_signal_during_drain_forces_exit("040");
}

TEST_CASE("040 health-drain stops taking traffic first: NOT_SERVING at once, RPCs still served during the drain") {
  require_not_serving_first_and_still_serving("040");
}

// ------------------------------------------------------------------ 050

TEST_CASE("050 last-call-closes handles SIGTERM: exit 0 within its budget, drain included") {
  require_handles_sigterm(under_load("050"), *stage("050").budget + teardown_slack());
}

TEST_CASE("050 last-call-closes no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("050"));
}

TEST_CASE("050 last-call-closes no errors to clients: a health-aware client sees no failed RPC") {
  require_health_aware_client_sees_no_failure("050");
}

TEST_CASE("050 last-call-closes no errors to clients: round-robin with health checks and retries over two servers, each restarted, 0 failed") {
  require_rolling_restart_with_retries_clean("050");
}

TEST_CASE("050 last-call-closes bounded: an open stream is cut off at the deadline and reported, exit 1") {
  require_open_stream_cut_off("050");
}

TEST_CASE("050 last-call-closes bounded: a second SIGTERM during the drain forces exit 1 at once") {
  require_second_signal_during_drain_forces_exit("050");
}

TEST_CASE("050 last-call-closes stops taking traffic first: NOT_SERVING at once, RPCs still served during the drain") {
  require_not_serving_first_and_still_serving("050");
}

// ------------------------------------------------------------------ idle long-lived clients

namespace {

std::string hold_client() { return std::string(CHAPTER_BIN_DIR) + "/hold-client"; }

// A caller in a process of its own that keeps one channel open and idle.
std::unique_ptr<testkit::Process> idle_client(const Server& server, std::vector<std::string> extra_args = {},
                                              testkit::SpawnOptions options = {}) {
  std::vector<std::string> argv{hold_client(), "--connect", server.target()};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  auto p = std::make_unique<testkit::Process>(argv, options);
  p->expect_line("connected", testkit::scaled(milliseconds(10'000)));
  return p;
}

// An idle client answers the GOAWAY's PING on its next backup poll (5 s by
// default). A test that shows a stage waiting for it until the deadline
// must not let that poll come first: a budget scaled for a sanitizer (6 s
// under TSan) is longer than 5 s. This client polls only after everything
// the test waits for.
testkit::SpawnOptions backup_poll_after(milliseconds wait) {
  return {{"GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=" + std::to_string(2 * wait.count())}, {}};
}

StopReport under_load_with_idle_client(const std::string& binary, const Stage& s) {
  testkit::RedisServer redis;
  StopOptions o = under_load_options();
  o.idle_clients = 1;
  o.hold_client_binary = hold_client();
  StopReport r = run_stop_scenario(binary, redis, s.args, o);
  INFO(render(r));
  REQUIRE(r.started.size() >= 10);
  return r;
}
StopReport under_load_with_idle_client(const std::string& prefix) {
  return under_load_with_idle_client(bin(stage(prefix)), stage(prefix));
}

}  // namespace

TEST_CASE("040 health-drain bounded with an idle long-lived client: no, Shutdown() waits for its connection until the deadline") {
  testkit::RedisServer redis;
  const Stage& s = stage("040");
  Server server(bin(s), redis.address(), s.args);
  auto idle = idle_client(server, {}, backup_poll_after(*s.budget + milliseconds(3000)));
  auto signalled = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  // No call at all, yet the whole budget went by: the idle channel answers
  // the GOAWAY PING only on its client's backup poll (5 s by default, here
  // later than the deadline whatever TESTKIT_TIMEOUT_SCALE makes of it).
  REQUIRE(server.process().exit_time() - signalled >= *s.budget - milliseconds(50));
  REQUIRE(status.exited);
}

TEST_CASE("050 last-call-closes bounded with an idle long-lived client: exit 0 right after the drain") {
  testkit::RedisServer redis;
  const Stage& s = stage("050");
  Server server(bin(s), redis.address(), s.args);
  auto idle = idle_client(server);
  auto signalled = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(status.ok());
  const milliseconds drain(std::stoll(s.args.at(3)));
  REQUIRE(server.process().exit_time() - signalled <= drain + testkit::scaled(milliseconds(500)));
  REQUIRE(server.process().out().find("0 call(s) of ours left") != std::string::npos);
}

TEST_CASE("040 health-drain handles SIGTERM with an idle long-lived client: no, exit only at the deadline") {
  StopReport r = under_load_with_idle_client("040");
  INFO(render(r));
  REQUIRE(r.exit);
  // Every call is answered by drain + 400 ms of work; this exit came later.
  const milliseconds drain(std::stoll(stage("040").args.at(3)));
  REQUIRE(*r.shutdown_time > drain + milliseconds(400) + testkit::scaled(milliseconds(400)));
}

TEST_CASE("050 last-call-closes handles SIGTERM with an idle long-lived client: exit 0 as soon as the calls are answered") {
  StopReport r = under_load_with_idle_client("050");
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->ok());
  REQUIRE(r.failed() == 0);
  REQUIRE(r.lost().empty());
  REQUIRE(r.abandoned().empty());
  const milliseconds drain(std::stoll(stage("050").args.at(3)));
  REQUIRE(*r.shutdown_time <= drain + milliseconds(400) + testkit::scaled(milliseconds(400)));
}

// ------------------------------------------------------------------ rolling restart, no retries

namespace {

// Two servers of one stage, each stopped and restarted in turn, under a load
// that keeps sending at 200/s; round_robin with health checks, no retries.
RollingReport rolling_without_retries(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  LoadOptions load;
  load.rpcs = 100'000;  // an upper bound: the load stops when the restarts are done
  load.rate = 200;
  load.work_ms = 20;
  load.id_prefix = "roll";
  return run_rolling_restart(bin(s), redis, s.args, load, kNoRetryServiceConfig);
}

std::string failures(const RollingReport& r) {
  std::string f;
  for (auto& [code, e] : r.failed_by_code()) f += code + " x" + std::to_string(e.first) + ": " + e.second + "\n";
  return f;
}

}  // namespace

TEST_CASE("010 naive-exit no errors to clients: no, a rolling restart without retries fails the RPCs it kills") {
  RollingReport r = rolling_without_retries("010");
  INFO(failures(r));
  REQUIRE(r.failed_by_code().count("UNAVAILABLE") == 1);  // "Connection reset by peer": killed mid-call
  REQUIRE(r.lost().empty());
}

// 020 and 030 announce nothing: the balancer learns of the stop from GOAWAY,
// and an RPC that reaches the server between Shutdown() and the client
// reading the GOAWAY fails. The window is a few milliseconds per stop, so
// the test repeats the rolling restart (at most 8 times) until one shows.
// On a quiet machine eight restarts can all miss it: a test that is not
// deterministic does not belong in the suite, so these two are hidden and
// run by hand (03-grpc-gracefulstop-tests "[race]"). The deterministic proof
// that 020 and 030 fail clients is "RPCs sent just after SIGTERM get
// UNAVAILABLE unannounced".
void require_rolling_failures(const std::string& prefix) {
  std::string seen;
  for (int attempt = 1; attempt <= 8 && seen.empty(); ++attempt) {
    RollingReport r = rolling_without_retries(prefix);
    REQUIRE(r.lost().empty());
    seen = failures(r);
  }
  INFO(seen);
  REQUIRE_FALSE(seen.empty());
}

TEST_CASE("020 shutdown-thread no errors to clients: no, a rolling restart without retries fails RPCs that race the GOAWAY",
          "[.][race]") {
  require_rolling_failures("020");
}

TEST_CASE("030 shutdown-deadline no errors to clients: no, a rolling restart without retries fails RPCs that race the GOAWAY",
          "[.][race]") {
  require_rolling_failures("030");
}

TEST_CASE("040 health-drain no errors to clients: a rolling restart with health checks and no retries at all, 0 failed") {
  RollingReport r = rolling_without_retries("040");
  INFO(failures(r));
  REQUIRE(r.load.rpcs.size() >= 100);
  REQUIRE(r.ok() == static_cast<int>(r.load.rpcs.size()));
  REQUIRE(r.lost().empty());
}

TEST_CASE("050 last-call-closes no errors to clients: a rolling restart with health checks and no retries at all, 0 failed") {
  RollingReport r = rolling_without_retries("050");
  INFO(failures(r));
  REQUIRE(r.load.rpcs.size() >= 100);
  REQUIRE(r.ok() == static_cast<int>(r.load.rpcs.size()));
  REQUIRE(r.lost().empty());
}

// ------------------------------------------------------------------ a health Watch opened by the application

namespace {

// grpc.health.v1 Watch on service "", read on a thread of its own: a stream
// the application opened itself (not the one a load-balancing policy opens).
class HealthWatch {
 public:
  explicit HealthWatch(std::shared_ptr<grpc::Channel> channel) : stub_(grpc::health::v1::Health::NewStub(channel)) {
    grpc::health::v1::HealthCheckRequest request;
    reader_ = stub_->Watch(&context_, request);
    thread_ = std::thread([this] {
      grpc::health::v1::HealthCheckResponse response;
      while (reader_->Read(&response)) {
        last_status_ = response.status();
        ++updates_;
      }
      reader_->Finish();
      finished_ = true;
    });
  }
  ~HealthWatch() {
    context_.TryCancel();
    thread_.join();
  }
  bool wait_first(milliseconds timeout) {
    auto until = Clock::now() + testkit::scaled(timeout);
    while (updates_ == 0 && Clock::now() < until) std::this_thread::sleep_for(milliseconds(5));
    return updates_ > 0;
  }
  // True once the last update read says `status`.
  bool wait_status(grpc::health::v1::HealthCheckResponse::ServingStatus status, milliseconds timeout) {
    auto until = Clock::now() + testkit::scaled(timeout);
    while (last_status_ != status && Clock::now() < until) std::this_thread::sleep_for(milliseconds(5));
    return last_status_ == status;
  }
  bool finished() const { return finished_; }

 private:
  std::unique_ptr<grpc::health::v1::Health::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReader<grpc::health::v1::HealthCheckResponse>> reader_;
  std::atomic<int> updates_{0};
  std::atomic<int> last_status_{-1};
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("040 health-drain bounded with an application's health Watch open: no, it holds Shutdown() until the deadline") {
  testkit::RedisServer redis;
  const Stage& s = stage("040");
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  HealthWatch watch(channel);
  REQUIRE(watch.wait_first(milliseconds(5000)));
  auto signalled = server.process().send_signal(SIGTERM);
  server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(server.process().exit_time() - signalled >= *s.budget - milliseconds(50));
}

TEST_CASE("050 last-call-closes bounded with an application's health Watch open: exit 0 right after the drain") {
  testkit::RedisServer redis;
  const Stage& s = stage("050");
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  HealthWatch watch(channel);
  REQUIRE(watch.wait_first(milliseconds(5000)));
  auto signalled = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(status.ok());
  const milliseconds drain(std::stoll(s.args.at(3)));
  REQUIRE(server.process().exit_time() - signalled <= drain + testkit::scaled(milliseconds(500)));
}

// ------------------------------------------------------------------ a caller pinned to one server

namespace {

// The ids after "work: started id=" in a server's output.
std::set<std::string> started_ids(const std::string& out) {
  std::set<std::string> ids;
  const std::string key = "work: started id=";
  for (std::size_t at = out.find(key); at != std::string::npos; at = out.find(key, at + 1)) {
    const std::size_t from = at + key.size();
    ids.insert(out.substr(from, out.find('\n', from) - from));
  }
  return ids;
}

// pick_first over two addresses, no health checking, no retries of any kind:
// the channel stays on the first server for as long as that one keeps its
// connection, as a caller behind an L4 Service (kube-proxy's NAT) stays on
// one pod. Only a GOAWAY (or a closed connection) moves it.
const char* const kPinnedServiceConfig = R"({"loadBalancingConfig": [{"pick_first": {}}]})";

// Two servers of one stage; a caller pinned to the first keeps sending
// (100/s, 100 ms of work, calls overlapping); the first is stopped with
// SIGTERM while calls run on it. The caller must end up on the second
// server with no call refused. One thing gRPC 1.51 does not let the server
// avoid: a call whose HEADERS cross the GOAWAY on the wire (sent before the
// client read it, read after the server's Shutdown() began) is dropped by
// the C core (Server::CallData::StartNewRpc: ShutdownCalled() -> KillZombie)
// and the client sees CANCELLED; no handler ever runs. Seen in about 1 of 8
// runs on a quiet machine, up to 3 calls in one stop on a loaded one and 14
// under ASan (the window is the time the client takes to read the GOAWAY):
// it is tolerated, as CANCELLED only. A call the server refuses fails; one
// the client never sent is told apart by its message (below).
// The caller waits for a ready connection (wait-for-ready), as a caller
// behind a Service should: on GOAWAY it reconnects, and on a starved
// machine its first attempt may reach the stopping server's listener before
// it closed ("failed to connect to all addresses ... tcp handshaker
// shutdown", seen under TSan with a parallel build); without it every call
// made meanwhile fails at once, although no server ever saw it. A call a
// server has taken still fails the test if it fails.
void require_pinned_caller_moves_without_failures(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  // The second server starts only once the caller is connected to the
  // first: pick_first cannot have chosen it (a slow first connection
  // attempt, seen under ASan, would otherwise pin the caller to it).
  int second_port = 0;
  {
    Server probe(bin(s), redis.address(), s.args);
    second_port = probe.port();
    probe.process().kill();
  }
  Server first(bin(s), redis.address(), s.args);
  auto channel = channel_to({first.target(), "127.0.0.1:" + std::to_string(second_port)}, kPinnedServiceConfig);
  Server second(bin(s), redis.address(), s.args, second_port);
  LoadOptions load;
  load.rate = 100;
  load.work_ms = 100;
  load.rpcs = static_cast<int>(testkit::scaled(milliseconds(2500)).count() / 10);  // 2.5 s (scaled) at 100/s
  load.id_prefix = "pinned";
  load.wait_for_ready = true;
  Load sender(channel, load);
  for (int i = 0; i < 10; ++i) first.process().expect_line("work: started", milliseconds(10'000));
  first.process().send_signal(SIGTERM);
  auto status = first.process().expect_exit(*s.budget + milliseconds(5000));
  second.process().expect_line("work: started", milliseconds(10'000));  // the caller moved
  LoadResult r = sender.wait();
  std::set<std::string> started = started_ids(first.process().out());
  for (auto& id : started_ids(second.process().out())) started.insert(id);
  const std::set<std::string> persisted = redis.client().smembers("work:done");
  std::map<std::string, int> failed;
  std::set<int> pids;
  for (auto& rpc : r.rpcs) {
    if (rpc.ok()) {
      pids.insert(rpc.server_pid);
      continue;
    }
    std::string what = code_name(rpc.code) + ": " + rpc.message;
    // From 050 on, a call still queued for one of the server's threads when
    // the last call is answered fails unstarted (README, 050): allowed only
    // if no server started it and nothing of it was persisted.
    if (what == "UNAVAILABLE: Cancelling all calls" || what == "UNAVAILABLE: server stopping: call not started")
      what += started.count(rpc.id) || persisted.count(rpc.id) ? " (started!)" : " (not started)";
    ++failed[what];
  }
  std::string f;
  for (auto& [what, n] : failed) f += what + " x" + std::to_string(n) + "\n";
  INFO(first.process().transcript());
  INFO(f);
  REQUIRE(status.ok());
  // The client's own transport may fail a call it had queued but not yet
  // sent when the GOAWAY arrives ("GOAWAY received"): the server never saw
  // it, and a default channel re-sends it transparently (this caller has
  // retries off, to see everything). A call the server refuses itself
  // ("server is shutting down", what 050 did before it sent GOAWAY first)
  // fails the test.
  for (auto& [what, n] : failed)
    REQUIRE((what.rfind("CANCELLED:", 0) == 0 || what == "UNAVAILABLE: GOAWAY received" ||
             (prefix >= "050" && what.find(" (not started)") != std::string::npos)));
  REQUIRE(pids.count(first.process().pid()) == 1);
  REQUIRE(pids.count(second.process().pid()) == 1);
}

}  // namespace

TEST_CASE("040 health-drain no errors to clients: a caller pinned with pick_first, no health checks, no retries, moves to the second server on GOAWAY, none refused") {
  require_pinned_caller_moves_without_failures("040");
}

TEST_CASE("050 last-call-closes no errors to clients: a caller pinned with pick_first, no health checks, no retries, moves to the second server on GOAWAY, none refused") {
  require_pinned_caller_moves_without_failures("050");
}

// ------------------------------------------------------------------ calls received, not yet handed to a handler

namespace {

// A synchronous gRPC server hands each call it received to a handler on one
// of its threads; until a thread takes it from the server's queue, no
// handler (and no count kept by one) knows it exists. Before the tracker
// closed when it found no call left, calls still queued then were cut by
// Shutdown(now) after their handler had started (seen under TSan: started,
// persisted, and the client told UNAVAILABLE: Cancelling all calls). Callers that keep
// sending, 32 calls at a time with no pause, to a server they stay on (no
// health checks, no retries), keep calls in that queue at every moment, so
// some are there when the stop decides its last call was answered. What
// the stage promises for them: a call a handler started is answered OK;
// any other call fails without having started (nothing persisted, no
// "work: started"), so that sending it again is safe.
void require_no_started_call_cut(const std::string& prefix) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()}, kPinnedServiceConfig);
  LoadOptions load;
  load.rate = 0;  // as fast as 32 calls in flight allow
  load.concurrency = 32;
  load.work_ms = 0;
  load.rpcs = 1'000'000;  // an upper bound: hold_back() ends the load
  load.id_prefix = "flood";
  load.rpc_timeout = testkit::scaled(milliseconds(10'000));
  Load sender(channel, load);
  for (int i = 0; i < 200; ++i) server.process().expect_line("work: started", milliseconds(10'000));
  server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(5000));
  sender.hold_back();
  LoadResult r = sender.wait();
  const std::set<std::string> persisted = redis.client().smembers("work:done");
  const std::set<std::string> started = started_ids(server.process().out());
  std::map<std::string, int> failed;
  std::string started_but_failed, lost, persisted_but_failed;
  int ok = 0;
  for (auto& rpc : r.rpcs) {
    if (rpc.ok()) {
      ++ok;
      if (!persisted.count(rpc.id)) lost += rpc.id + "\n";
      continue;
    }
    ++failed[code_name(rpc.code) + ": " + rpc.message];
    if (started.count(rpc.id)) started_but_failed += rpc.id + " " + code_name(rpc.code) + ": " + rpc.message + "\n";
    if (persisted.count(rpc.id)) persisted_but_failed += rpc.id + " " + code_name(rpc.code) + ": " + rpc.message + "\n";
  }
  std::string f;
  for (auto& [what, n] : failed) f += what + " x" + std::to_string(n) + "\n";
  // When the failed calls were sent, against the server's GOAWAY line.
  std::optional<testkit::Clock::time_point> goaway;
  for (auto& line : server.process().timed_lines())
    if (line.text.find("GOAWAY sent") != std::string::npos) goaway = line.at;
  if (goaway)
    for (auto& rpc : r.rpcs)
      if (!rpc.ok() && rpc.sent <= *goaway)
        f += "sent " + std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(*goaway - rpc.sent).count()) +
             " us before the GOAWAY line: " + rpc.id + " " + code_name(rpc.code) + ": " + rpc.message + "\n";
  // The server's own account of the stop, and of every call that failed.
  std::string account;
  for (auto& line : server.process().timed_lines()) {
    bool show = line.text.find("shutdown:") != std::string::npos;
    for (auto& rpc : r.rpcs)
      if (!show && !rpc.ok() && line.text.find("id=" + rpc.id + " ") != std::string::npos) show = true;
    for (auto& rpc : r.rpcs)
      if (!show && !rpc.ok() && line.text.size() >= rpc.id.size() + 3 &&
          line.text.compare(line.text.size() - rpc.id.size() - 3, std::string::npos, "id=" + rpc.id) == 0)
        show = true;
    if (show) account += line.text + "\n";
  }
  INFO("server, the stop and the calls that failed:\n" << account << server.process().err().substr(0, 2000));
  INFO("failed by status:\n" << f);
  INFO("ok: " << ok);
  INFO("started, then failed:\n" << started_but_failed);
  INFO("persisted, then failed:\n" << persisted_but_failed);
  REQUIRE(status.ok());
  REQUIRE(ok >= 200);
  REQUIRE(lost.empty());
  REQUIRE(persisted_but_failed.empty());
  // The heart of it: a call the server started is never cut by the stop.
  REQUIRE(started_but_failed.empty());
}

}  // namespace

TEST_CASE("050 last-call-closes no errors to clients: callers that never pause, 32 calls at a time: no call a handler started is cut, the others fail unstarted") {
  require_no_started_call_cut("050");
}

TEST_CASE("060 connection-age no errors to clients: callers that never pause, 32 calls at a time: no call a handler started is cut, the others fail unstarted") {
  require_no_started_call_cut("060");
}

TEST_CASE("070 quick-exit no errors to clients: callers that never pause, 32 calls at a time: no call a handler started is cut, the others fail unstarted") {
  require_no_started_call_cut("070");
}

// ------------------------------------------------------------------ a new server while callers stay connected

namespace {

// A caller pinned to the old server (pick_first over [new, old] while the
// new one is not yet listening: it connects to the old one), then the new
// server starts on its address, as a pod added behind an L4 Service. Only a
// reconnection can bring the caller to it. The caller keeps sending; with
// `age_args` the old server has a maximum connection age.
struct NewServerReport {
  LoadResult load;
  bool new_server_served = false;
  int old_pid = 0;
};

NewServerReport new_server_while_pinned(const std::string& prefix, std::vector<std::string> age_args) {
  testkit::RedisServer redis;
  const Stage& s = stage(prefix);
  std::vector<std::string> args = s.args;
  args.insert(args.end(), age_args.begin(), age_args.end());
  // A port for the new server that nothing listens on yet.
  int new_port = 0;
  {
    Server probe(bin(s), redis.address(), s.args);
    new_port = probe.port();
    probe.process().kill();
  }
  Server old_server(bin(s), redis.address(), args);
  auto channel = channel_to({"127.0.0.1:" + std::to_string(new_port), old_server.target()}, kPinnedServiceConfig);
  LoadOptions load;
  load.rate = 50;
  load.work_ms = 50;
  load.rpcs = 100'000;  // an upper bound: hold_back() ends the load
  load.id_prefix = "pinned";
  load.wait_for_ready = true;  // as above: a reconnection on a starved machine must not fail calls no server saw
  Load sender(channel, load);
  old_server.process().expect_line("work: started", milliseconds(10'000));
  Server new_server(bin(s), redis.address(), args, new_port);
  NewServerReport r;
  // The old server's connection is at most 1.1 x 500 ms old when this starts
  // waiting; 3 s (scaled) is far beyond it.
  r.new_server_served = new_server.process().wait_for_line("work: started", milliseconds(3000)).has_value();
  sender.hold_back();
  r.load = sender.wait();
  r.old_pid = old_server.process().pid();
  return r;
}

// Every call that failed, except those the client's transport failed
// before sending them, when it read a GOAWAY ("GOAWAY received": no server
// saw them, and a channel with its default transparent retries re-sends
// them; this caller has retries off).
std::string not_ok(const LoadResult& load) {
  std::string f;
  for (auto& rpc : load.rpcs)
    if (!rpc.ok() && !(rpc.code == grpc::StatusCode::UNAVAILABLE && rpc.message == "GOAWAY received"))
      f += rpc.id + " " + code_name(rpc.code) + ": " + rpc.message + "\n";
  return f;
}

}  // namespace

TEST_CASE("050 last-call-closes no errors to clients: no, a pinned caller never reaches a server started after it connected") {
  NewServerReport r = new_server_while_pinned("050", {});
  INFO(not_ok(r.load));
  REQUIRE(not_ok(r.load).empty());
  REQUIRE_FALSE(r.new_server_served);
  for (auto& rpc : r.load.rpcs) CHECK(rpc.server_pid == r.old_pid);
}

TEST_CASE("060 connection-age no errors to clients: a pinned caller moves to a server started after it connected (age 500 ms), 0 failed") {
  NewServerReport r = new_server_while_pinned("060", {"--max-connection-age-ms", "500",
                                                     "--max-connection-age-grace-ms", "5000"});
  INFO(not_ok(r.load));
  REQUIRE(r.new_server_served);
  REQUIRE(not_ok(r.load).empty());
  REQUIRE(r.load.rpcs.size() >= 10);
}

// ------------------------------------------------------------------ 060: 050's stop, unchanged

TEST_CASE("060 connection-age handles SIGTERM: exit 0 within its budget, drain included") {
  require_handles_sigterm(under_load("060"), *stage("060").budget + teardown_slack());
}

TEST_CASE("060 connection-age no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("060"));
}

TEST_CASE("060 connection-age no errors to clients: a caller pinned with pick_first, no health checks, no retries, moves to the second server on GOAWAY, none refused") {
  require_pinned_caller_moves_without_failures("060");
}

TEST_CASE("060 connection-age bounded: an open stream is cut off at the deadline and reported, exit 1") {
  require_open_stream_cut_off("060");
}

TEST_CASE("060 connection-age bounded with an idle long-lived client: exit 0 right after the drain") {
  testkit::RedisServer redis;
  const Stage& s = stage("060");
  Server server(bin(s), redis.address(), s.args);
  auto idle = idle_client(server);
  auto signalled = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(status.ok());
  const milliseconds drain(std::stoll(s.args.at(3)));
  REQUIRE(server.process().exit_time() - signalled <= drain + testkit::scaled(milliseconds(500)));
}

TEST_CASE("060 connection-age stops taking traffic first: NOT_SERVING at once, RPCs still served during the drain") {
  require_not_serving_first_and_still_serving("060");
}

// ------------------------------------------------------------------ 070: exit once every connection is closed

TEST_CASE("070 quick-exit handles SIGTERM: exit 0 within its budget, drain included") {
  require_handles_sigterm(under_load("070"), *stage("070").budget + teardown_slack());
}

TEST_CASE("070 quick-exit no lost work: RPCs running at SIGTERM complete and are persisted") {
  require_no_lost_work(under_load("070"));
}

TEST_CASE("070 quick-exit no errors to clients: a health-aware client sees no failed RPC") {
  require_health_aware_client_sees_no_failure("070");
}

TEST_CASE("070 quick-exit no errors to clients: a caller pinned with pick_first, no health checks, no retries, keeps sending, moves to the second server on GOAWAY, none refused") {
  require_pinned_caller_moves_without_failures("070");
}

TEST_CASE("070 quick-exit bounded: an open stream is cut off at the deadline and reported, exit 1") {
  require_open_stream_cut_off("070");
}

TEST_CASE("070 quick-exit bounded: a second SIGTERM during the drain forces exit 1 at once") {
  require_second_signal_during_drain_forces_exit("070");
}

namespace {

void require_quick_exit(const StopReport& r) {
  INFO(render(r));
  REQUIRE(r.exit);
  REQUIRE(r.exit->ok());
  REQUIRE(r.failed() == 0);
  REQUIRE(r.lost().empty());
  REQUIRE(r.abandoned().empty());
  const milliseconds drain(std::stoll(stage("070").args.at(3)));
  REQUIRE(*r.shutdown_time <= drain + milliseconds(400) + testkit::scaled(milliseconds(400)));
  REQUIRE(r.server_out.find("every connection closed, exit now") != std::string::npos);
}

}  // namespace

TEST_CASE("070 quick-exit handles SIGTERM with an idle long-lived client: exit 0 as soon as the calls are answered") {
  require_quick_exit(under_load_with_idle_client("070"));
}

#ifdef GRPCSTOP_070_STATIC
// The same source linked statically and with one malloc arena (README,
// "Benchmarks": the kernel's part of an exit grows with what the process
// maps). Built without sanitizers only.
TEST_CASE("070 quick-exit linked statically, one malloc arena: no shared gRPC, Protobuf or Abseil library and no arena reservation is mapped, and the stop is 070's") {
  const std::string binary = testkit::stage_binary(CHAPTER_BIN_DIR, "070-quick-exit-static");
  {
    testkit::RedisServer redis;
    Server server(binary, redis.address(), stage("070").args);
    std::ifstream in("/proc/" + std::to_string(server.process().pid()) + "/maps");
    const std::string maps((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(maps);
    REQUIRE(maps.find("/libc.so") != std::string::npos);  // a real map was read
    CHECK(maps.find("/libgrpc") == std::string::npos);
    CHECK(maps.find("/libprotobuf") == std::string::npos);
    CHECK(maps.find("/libabsl") == std::string::npos);
    CHECK(maps.find("/libhiredis") == std::string::npos);
    // One malloc arena (one_arena.cpp): no thread got a 64 MB arena
    // reservation of its own (an anonymous mapping with no access; a
    // thread's stack guard is one page).
    std::istringstream lines(maps);
    int arenas = 0;
    for (std::string line; std::getline(lines, line);) {
      unsigned long from = 0, to = 0;
      char perms[5] = {};
      unsigned long offset = 0;
      char dev[6] = {};
      unsigned long inode = 1;
      if (std::sscanf(line.c_str(), "%lx-%lx %4s %lx %5s %lu", &from, &to, perms, &offset, dev, &inode) == 6 &&
          std::string(perms) == "---p" && inode == 0 && to - from >= (16ul << 20))
        ++arenas;
    }
    CHECK(arenas == 0);
  }
  require_quick_exit(under_load_with_idle_client(binary, stage("070")));
}
#endif

TEST_CASE("070 quick-exit stops taking traffic first: NOT_SERVING at once, RPCs still served during the drain") {
  require_not_serving_first_and_still_serving("070");
}

// ------------------------------------------------------------------ which health Watch holds Shutdown()

namespace {

// round_robin with client-side health checking over one server, and no
// call: the only stream is the Watch the balancer opened itself. In a
// process of its own (hold-client --health-checked), so that the backup
// poll can be set for it alone.
std::unique_ptr<testkit::Process> balancer_health_watch_client(const Server& server,
                                                               testkit::SpawnOptions options = {}) {
  return idle_client(server, {"--health-checked"}, options);
}

}  // namespace

// The Watch that client-side health checking opens is the channel's own: a
// client with no call of its own running reads its socket only on its
// backup poll, and reads the GOAWAY (which ends that Watch and the
// connection) only then. With the poll set past the end of the test, it
// holds 040's Shutdown() until the deadline, like an application's Watch
// (test 40).
TEST_CASE("040 health-drain bounded with a balancer's health-check Watch open: no, it holds Shutdown() until the deadline too") {
  testkit::RedisServer redis;
  const Stage& s = stage("040");
  Server server(bin(s), redis.address(), s.args);
  auto client = balancer_health_watch_client(server, backup_poll_after(*s.budget + milliseconds(3000)));
  auto signalled = server.process().send_signal(SIGTERM);
  server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(server.process().exit_time() - signalled >= *s.budget - milliseconds(50));
}

TEST_CASE("050 last-call-closes bounded with a balancer's health-check Watch open: exit 0 right after the drain") {
  testkit::RedisServer redis;
  const Stage& s = stage("050");
  Server server(bin(s), redis.address(), s.args);
  auto client = balancer_health_watch_client(server);
  auto signalled = server.process().send_signal(SIGTERM);
  auto status = server.process().expect_exit(*s.budget + milliseconds(3000));
  INFO(server.process().transcript());
  REQUIRE(status.ok());
  const milliseconds drain(std::stoll(s.args.at(3)));
  REQUIRE(server.process().exit_time() - signalled <= drain + testkit::scaled(milliseconds(500)));
}

TEST_CASE("040 health-drain stops taking traffic first: health Shutdown() sends NOT_SERVING on an application's Watch and leaves it open") {
  testkit::RedisServer redis;
  const Stage& s = stage("040");
  Server server(bin(s), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  HealthWatch watch(channel);
  REQUIRE(watch.wait_status(grpc::health::v1::HealthCheckResponse::SERVING, milliseconds(5000)));
  server.process().send_signal(SIGTERM);
  server.process().expect_line("health NOT_SERVING", milliseconds(5000));
  REQUIRE(watch.wait_status(grpc::health::v1::HealthCheckResponse::NOT_SERVING, milliseconds(5000)));
  server.process().expect_line("drain over", milliseconds(5000));
  REQUIRE_FALSE(watch.finished());  // still open: it is what holds Shutdown() (test 40)
  server.process().expect_exit(*s.budget + milliseconds(3000));
}
