// Column "stop latency": how long a stage takes to act on SIGTERM, proved
// against the interval between jobs (bounds are generous; the figures are in
// the benchmark).
#include <catch2/catch.hpp>

#include <algorithm>

#include "scenarios.hpp"

using namespace worker_loop;
using testkit::scaled;

namespace {

// A lower bound on a latency measured from the moment the test sent the
// signal. The test sends it after it has read the line the stage printed
// ("step 1/", "idle"), and on a loaded machine reading that line can lag by
// a good part of the work that was left, which then runs before the signal
// arrives: the expected latency minus a slack that grows with
// TESTKIT_TIMEOUT_SCALE, like every other bound.
long long at_least(milliseconds expected, milliseconds slack) { return (expected - scaled(slack)).count(); }

// An idle stop "at once": well under one second (scaled), while the blocking
// timeout is three times that bound, so a stage that waits it out cannot
// pass by luck, under sanitizers either.
milliseconds idle_stop_bound() { return scaled(milliseconds(1000)); }

Settings idle_stop_settings() {
  Settings cfg;
  cfg.block = std::max(milliseconds(5000), 3 * idle_stop_bound());
  cfg.budget = 2 * cfg.block;
  cfg.workers = 4;
  return cfg;
}

}  // namespace

TEST_CASE("020 flag-around-sleep: a SIGTERM during the sleep is acted on only after the whole interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(1500);
  auto r = stop_while_idle(redis, stage("020-flag-around-sleep"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= at_least(milliseconds(1500), milliseconds(500)));
  CHECK(r.latency_ms <= 1500 + scaled(milliseconds(2000)).count());
}

TEST_CASE("020 flag-around-sleep: a SIGTERM mid-job waits for the rest of the job and then a whole interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(1500);
  cfg.step = milliseconds(250);
  auto r = stop_mid_job(redis, stage("020-flag-around-sleep"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= at_least(milliseconds(1500 + 750), milliseconds(250)));  // 3 steps left, then the interval
}

TEST_CASE("025 stop-token: a SIGTERM during the wait stops the worker at once, not after the interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(10000);
  auto r = stop_while_idle(redis, stage("025-stop-token"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}

TEST_CASE("025 stop-token: a SIGTERM mid-job stops after the rest of the job, without the interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(10000);
  cfg.step = milliseconds(250);
  auto r = stop_mid_job(redis, stage("025-stop-token"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= at_least(milliseconds(750), milliseconds(250)));  // about 3 steps of 250 ms were left
  CHECK(r.latency_ms < 750 + scaled(milliseconds(1500)).count());
}

TEST_CASE("030 interruptible-wait: a SIGTERM during the wait stops the worker at once, not after the interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(10000);
  auto r = stop_while_idle(redis, stage("030-interruptible-wait"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms < scaled(milliseconds(1000)).count());
}

TEST_CASE("030 interruptible-wait: a SIGTERM mid-job stops after the rest of the job, without the interval") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(10000);
  cfg.step = milliseconds(250);
  auto r = stop_mid_job(redis, stage("030-interruptible-wait"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= at_least(milliseconds(750), milliseconds(250)));  // about 3 steps of 250 ms were left
  CHECK(r.latency_ms < 750 + scaled(milliseconds(1500)).count());
}

static void check_reliable_idle(const char* name) {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.budget = milliseconds(5000);
  auto r = stop_while_idle(redis, stage(name), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}

TEST_CASE("040 reliable-queue: a SIGTERM while waiting for a job stops within the blocking timeout") { check_reliable_idle("040-reliable-queue"); }

TEST_CASE("033 processing-list: a SIGTERM while waiting for a job stops within the blocking timeout") { check_reliable_idle("033-processing-list"); }

TEST_CASE("035 bad-deliveries: a SIGTERM while waiting for a job stops within the blocking timeout") { check_reliable_idle("035-bad-deliveries"); }

TEST_CASE("043 named-list: a SIGTERM while waiting for a job stops within the blocking timeout") { check_reliable_idle("043-named-list"); }

TEST_CASE("040 reliable-queue: a SIGTERM mid-job stops after the rest of the job") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.step = milliseconds(250);
  auto r = stop_mid_job(redis, stage("040-reliable-queue"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= at_least(milliseconds(750), milliseconds(250)));
  CHECK(r.latency_ms < 750 + scaled(milliseconds(1500)).count());
}

static void check_pool_idle(const char* name) {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.workers = 4;
  auto r = stop_while_idle(redis, stage(name), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}

TEST_CASE("050 worker-pool: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") { check_pool_idle("050-worker-pool"); }

TEST_CASE("045 worker-pool: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") { check_pool_idle("045-worker-pool"); }

TEST_CASE("060 leased-names: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.workers = 4;
  auto r = stop_while_idle(redis, stage("060-leased-names"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}

TEST_CASE("100 unblock-idle: a SIGTERM while all workers wait for jobs stops the pool at once, not at the blocking timeout") {
  testkit::RedisServer redis;
  auto r = stop_while_idle(redis, stage("100-unblock-idle"), idle_stop_settings());
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms < idle_stop_bound().count());  // about 1 ms in the benchmark
}

// The same experiment and bound as 100's test, on the stage before it: the
// bound is what 100 adds.
TEST_CASE("090 hand-back: an idle pool outlasts the at-once bound: it stops only at the blocking timeout") {
  testkit::RedisServer redis;
  auto cfg = idle_stop_settings();
  auto r = stop_while_idle(redis, stage("090-hand-back"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms >= idle_stop_bound().count());
  CHECK(r.latency_ms <= cfg.block.count() + scaled(milliseconds(1000)).count());
}

TEST_CASE("105 expire-keys: a SIGTERM while all workers wait for jobs stops the pool at once, not at the blocking timeout") {
  testkit::RedisServer redis;
  auto r = stop_while_idle(redis, stage("105-expire-keys"), idle_stop_settings());
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms < idle_stop_bound().count());
}

TEST_CASE("110 streams: a SIGTERM while all workers wait for jobs stops the pool at once, not at the blocking timeout") {
  testkit::RedisServer redis;
  auto r = stop_while_idle(redis, stage("110-streams"), idle_stop_settings());
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms < idle_stop_bound().count());
}

TEST_CASE("070 attempt-cap: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.workers = 4;
  auto r = stop_while_idle(redis, stage("070-attempt-cap"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}

TEST_CASE("080 claim-key: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.workers = 4;
  auto r = stop_while_idle(redis, stage("080-claim-key"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}

TEST_CASE("090 hand-back: a SIGTERM while all workers wait for jobs stops the pool within the blocking timeout") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.block = milliseconds(1000);
  cfg.workers = 4;
  auto r = stop_while_idle(redis, stage("090-hand-back"), cfg);
  INFO(r.transcript);
  REQUIRE(r.exited_ok());
  CHECK(r.latency_ms <= 1000 + scaled(milliseconds(1000)).count());
}
