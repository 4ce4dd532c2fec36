// Column "bounded": a job longer than the stop budget, and a second signal.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace worker_loop;
using testkit::scaled;

namespace {

Settings long_job_settings() {
  Settings cfg;
  cfg.interval = milliseconds(500);
  cfg.step = milliseconds(300);  // 10 steps: a 3 s job
  cfg.budget = milliseconds(1000);
  return cfg;
}

void check_unbounded(const char* name) {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  auto r = stop_during_long_job(redis, stage(name), cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  // Either still running after budget + margin, or (slow sanitizer runs)
  // exited only after the whole job: not bounded either way.
  if (r.status) CHECK(r.latency_ms > 2000);
  CHECK_FALSE(r.reported);
}

void check_second_signal_ignored(const char* name) {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage(name), long_job_settings(), milliseconds(1000));
  INFO(r.transcript);
  CHECK_FALSE(r.status);
}

}  // namespace

TEST_CASE("020 flag-around-sleep: a job longer than any budget holds the shutdown for as long as it runs") {
  check_unbounded("020-flag-around-sleep");
}

TEST_CASE("020 flag-around-sleep: a second SIGTERM does not force an exit") {
  check_second_signal_ignored("020-flag-around-sleep");
}

TEST_CASE("025 stop-token: a job longer than any budget holds the shutdown for as long as it runs") {
  check_unbounded("025-stop-token");
}

TEST_CASE("025 stop-token: a second SIGTERM does not force an exit") { check_second_signal_ignored("025-stop-token"); }

TEST_CASE("030 interruptible-wait: a job outlasting --budget-ms is abandoned at the budget, named, exit 1, and lost") {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  auto r = stop_during_long_job(redis, stage("030-interruptible-wait"), cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms >= 900);
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
  CHECK(r.reported);
  CHECK(r.state.half_done());
  CHECK_FALSE(r.state.waiting);  // LPOP took it: nothing will ever run it again
}

TEST_CASE("030 interruptible-wait: a second SIGTERM during the stop forces exit 1 at once") {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage("030-interruptible-wait"), long_job_settings(), milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
  CHECK(r.err.find("second SIGTERM") != std::string::npos);
}

static void check_reliable_budget(const char* name) {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  const auto& s = stage(name);
  auto r = stop_during_long_job(redis, s, cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms >= 900);
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
  CHECK(r.reported);
  CHECK(r.state.waiting);  // still in the processing list

  cfg.step = milliseconds(10);
  auto again = start(s, redis, cfg);  // recovery happens before "ready"
  CHECK(again->out().find("recovered: 'id=long steps=10'") != std::string::npos);
  again->expect_line("job long: done", milliseconds(10000));
  again->send_signal(SIGTERM);
  CHECK(again->expect_exit(milliseconds(5000)).ok());
  auto st = job_state(redis.client(), cfg.queue, "long");
  CHECK(st.done);
  CHECK(st.attempts == 2);
  CHECK_FALSE(st.waiting);
}

TEST_CASE("040 reliable-queue: a job outlasting the budget is abandoned at the budget, exit 1, and the next start completes it") { check_reliable_budget("040-reliable-queue"); }

TEST_CASE("033 processing-list: a job outlasting the budget is abandoned at the budget, exit 1, and the next start completes it") { check_reliable_budget("033-processing-list"); }

TEST_CASE("035 bad-deliveries: a job outlasting the budget is abandoned at the budget, exit 1, and the next start completes it") { check_reliable_budget("035-bad-deliveries"); }

TEST_CASE("043 named-list: a job outlasting the budget is abandoned at the budget, exit 1, and the next start completes it") { check_reliable_budget("043-named-list"); }

static void check_reliable_second_signal(const char* name) {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  auto r = second_signal(redis, stage(name), cfg, milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
  CHECK(job_state(redis.client(), cfg.queue, "long").waiting);
}

TEST_CASE("040 reliable-queue: a second SIGTERM forces exit 1 at once and the job stays in the processing list") { check_reliable_second_signal("040-reliable-queue"); }

TEST_CASE("033 processing-list: a second SIGTERM forces exit 1 at once and the job stays in the processing list") { check_reliable_second_signal("033-processing-list"); }

TEST_CASE("035 bad-deliveries: a second SIGTERM forces exit 1 at once and the job stays in the processing list") { check_reliable_second_signal("035-bad-deliveries"); }

TEST_CASE("043 named-list: a second SIGTERM forces exit 1 at once and the job stays in the processing list") { check_reliable_second_signal("043-named-list"); }

static void check_pool_budget(const char* name) {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  auto r = stop_during_long_job(redis, stage(name), cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
  CHECK(r.reported);
  CHECK(r.err.find("jobs:processing:worker:") != std::string::npos);
  CHECK(r.state.waiting);
}

TEST_CASE("050 worker-pool: a job outlasting the budget is abandoned at the budget, named with its list, exit 1") { check_pool_budget("050-worker-pool"); }

TEST_CASE("045 worker-pool: a job outlasting the budget is abandoned at the budget, named with its list, exit 1") { check_pool_budget("045-worker-pool"); }

static void check_pool_second_signal(const char* name) {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage(name), long_job_settings(), milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}

TEST_CASE("050 worker-pool: a second SIGTERM forces exit 1 at once") { check_pool_second_signal("050-worker-pool"); }

TEST_CASE("045 worker-pool: a second SIGTERM forces exit 1 at once") { check_pool_second_signal("045-worker-pool"); }

TEST_CASE("060 leased-names: a second SIGTERM forces exit 1 at once") {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage("060-leased-names"), long_job_settings(), milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}

TEST_CASE("080 claim-key: a job abandoned at the budget stays in the processing list, out of every other worker's reach") {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  auto r = stop_during_long_job(redis, stage("080-claim-key"), cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->code == 1);
  auto& c = redis.client();
  CHECK(c.integer({"LLEN", cfg.queue}) == 0);  // not in the queue: in a processing list of "worker"
  CHECK(waiting_payloads(c, cfg.queue) == std::vector<std::string>{payload("long", 10)});
}

namespace {

void check_hand_back(const char* name) {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  cfg.lease = milliseconds(60000);  // a leftover in processing would wait this long
  const auto& s = stage(name);
  auto r = stop_during_long_job(redis, s, cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
  CHECK(r.reported);
  CHECK(r.err.find("handed back to the queue") != std::string::npos);
  auto& c = redis.client();
  CHECK(c.array({"LRANGE", cfg.queue, "0", "-1"}) == std::vector<std::string>{payload("long", 10)});
  CHECK(c.integer({"EXISTS", cfg.queue + ":claim:long", cfg.queue + ":lease:worker"}) == 0);

  cfg.step = milliseconds(10);
  cfg.name = "other";
  auto again = start(s, redis, cfg);
  again->expect_line("job long: done", milliseconds(10000));
  CHECK(job_state(c, cfg.queue, "long").attempts == 2);
  again->send_signal(SIGTERM);
  CHECK(again->expect_exit(milliseconds(5000)).ok());
}

}  // namespace

TEST_CASE("090 hand-back: a job abandoned at the budget is handed back to the queue and another worker finishes it at once") {
  check_hand_back("090-hand-back");
}

TEST_CASE("105 expire-keys: a job abandoned at the budget is handed back to the queue and another worker finishes it at once") {
  check_hand_back("105-expire-keys");
}

TEST_CASE("090 hand-back: a second SIGTERM forces exit 1 at once") {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage("090-hand-back"), long_job_settings(), milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}

TEST_CASE("110 streams: a job abandoned at the budget is given back and another worker finishes it at once") {
  testkit::RedisServer redis;
  auto cfg = long_job_settings();
  cfg.lease = milliseconds(60000);  // --min-idle-ms: without the give-back it would wait this long
  const auto& s = stage("110-streams");
  auto r = stop_during_long_job(redis, s, cfg, 10, milliseconds(1000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
  CHECK(r.reported);
  CHECK(r.err.find("handed back to the queue") != std::string::npos);
  CHECK(r.state.waiting);
  cfg.step = milliseconds(10);
  auto again = start(s, redis, cfg);
  again->expect_line("job long: done", milliseconds(10000));
  CHECK(job_state(redis.client(), cfg.queue, "long").attempts == 2);
  again->send_signal(SIGTERM);
  CHECK(again->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("110 streams: a second SIGTERM forces exit 1 at once") {
  testkit::RedisServer redis;
  auto r = second_signal(redis, stage("110-streams"), long_job_settings(), milliseconds(3000));
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->exited);
  CHECK(r.status->code == 1);
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}
