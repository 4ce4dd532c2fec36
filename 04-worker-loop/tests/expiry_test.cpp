// Keys that record one job (done marker, attempt counter, steps) must not
// grow without bound: after a run, every key the stage wrote either expires
// or is the queue itself or the dead-letter list (kept for an operator).
#include <catch2/catch.hpp>

#include <algorithm>
#include <thread>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

constexpr long long kRetainMs = 600'000;

struct Run {
  std::vector<std::string> persistent;  // keys with no expiry, but for the queue and the dead-letter list
  std::vector<long long> ttls;          // PTTL of every other key
  std::string transcript;
};

// Three jobs, run to the end, then SIGKILL (nothing a stop does matters
// here). The stages with a processing list also get a second copy of j1 (a
// producer's duplicate), which the done marker must turn into an ack.
Run run_and_list_keys(const char* name) {
  const auto& s = stage(name);
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(20);
  cfg.block = milliseconds(200);
  cfg.interval = milliseconds(10);
  auto ids = push_jobs(c, cfg.queue, "j", 3, 3, s.streams);
  // 033 runs every delivery, duplicates too (035 acknowledges them).
  const bool acks_duplicates = s.reliable && s.name != "033-processing-list";
  if (acks_duplicates) produce(c, cfg.queue, payload("j1", 3), s.streams);
  auto argv = command_line(s, redis, cfg);
  if (s.expiring) argv.insert(argv.end(), {"--retain-ms", std::to_string(kRetainMs)});
  testkit::Process p(argv);
  p.expect_line("ready", milliseconds(10000));
  if (acks_duplicates) p.expect_line("job j1: already done, duplicate acknowledged", milliseconds(20000));
  auto deadline = testkit::Clock::now() + testkit::scaled(milliseconds(20000));
  while (done_ids(c, cfg.queue, ids).size() < ids.size() && testkit::Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(20));
  p.kill();
  Run r;
  r.transcript = p.transcript();
  if (done_ids(c, cfg.queue, ids).size() != ids.size()) throw testkit::Failure("not every job done\n" + r.transcript);
  for (auto& key : c.array({"KEYS", "*"})) {
    if (key == cfg.queue || key == cfg.queue + ":dead") continue;
    long long ttl = c.integer({"PTTL", key});
    if (ttl < 0)
      r.persistent.push_back(key);
    else
      r.ttls.push_back(ttl);
  }
  return r;
}

// The ledger of 010-100 and 110: one set and one hash for the whole queue,
// one hash per job, none with an expiry.
void check_never_expire(const char* name) {
  auto r = run_and_list_keys(name);
  INFO(r.transcript);
  INFO(join(r.persistent));
  for (const char* key : {"jobs:done", "jobs:attempts", "jobs:steps:j1", "jobs:steps:j2", "jobs:steps:j3"})
    CHECK(std::count(r.persistent.begin(), r.persistent.end(), key) == 1);
}

}  // namespace

TEST_CASE("010 naive-loop: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("010-naive-loop");
}
TEST_CASE("020 flag-around-sleep: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("020-flag-around-sleep");
}
TEST_CASE("025 stop-token: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("025-stop-token");
}
TEST_CASE("030 interruptible-wait: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("030-interruptible-wait");
}
TEST_CASE("033 processing-list: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("033-processing-list");
}
TEST_CASE("035 bad-deliveries: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("035-bad-deliveries");
}
TEST_CASE("043 named-list: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("043-named-list");
}
TEST_CASE("045 worker-pool: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("045-worker-pool");
}
TEST_CASE("040 reliable-queue: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("040-reliable-queue");
}
TEST_CASE("050 worker-pool: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("050-worker-pool");
}
TEST_CASE("060 leased-names: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("060-leased-names");
}
TEST_CASE("070 attempt-cap: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("070-attempt-cap");
}
TEST_CASE("080 claim-key: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("080-claim-key");
}
TEST_CASE("090 hand-back: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("090-hand-back");
}
TEST_CASE("100 unblock-idle: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("100-unblock-idle");
}
TEST_CASE("110 streams: the done set, the attempts hash and each job's steps hash never expire") {
  check_never_expire("110-streams");
}

TEST_CASE("105 expire-keys: after a run every key of a job expires within --retain-ms, and a duplicate is still acknowledged") {
  auto r = run_and_list_keys("105-expire-keys");
  INFO(r.transcript);
  CHECK(r.persistent.empty());
  INFO(join(r.persistent));
  CHECK(r.ttls.size() >= 9);  // done, attempts and steps of j1..j3
  for (long long ttl : r.ttls) CHECK(ttl <= kRetainMs);
}
