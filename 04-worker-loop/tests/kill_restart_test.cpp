// Column "survives SIGKILL": kill -9 while every worker is at step 1 of 4 of
// a job, then start the same stage again and let it drain the queue.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

KillRestart run(const char* name) {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.interval = milliseconds(100);
  return kill_and_restart(redis, stage(name), cfg);
}

// LPOP-based stages: the killed job is gone for good, half done.
void require_killed_job_lost(const KillRestart& r) {
  INFO(r.transcript);
  CHECK(r.lost == r.killed);
  CHECK(r.half_done == r.killed);
  CHECK(r.reruns.empty());  // nobody even tried again
}

}  // namespace

TEST_CASE("010 naive-loop: after SIGKILL mid-job and a restart, the interrupted job is never done") {
  require_killed_job_lost(run("010-naive-loop"));
}

TEST_CASE("020 flag-around-sleep: after SIGKILL mid-job and a restart, the interrupted job is never done") {
  require_killed_job_lost(run("020-flag-around-sleep"));
}

TEST_CASE("025 stop-token: after SIGKILL mid-job and a restart, the interrupted job is never done") {
  require_killed_job_lost(run("025-stop-token"));
}

TEST_CASE("030 interruptible-wait: after SIGKILL mid-job and a restart, the interrupted job is never done") {
  require_killed_job_lost(run("030-interruptible-wait"));
}

static void check_reliable_kill_restart(const char* name) {
  auto r = run(name);
  INFO(r.transcript);
  CHECK(r.lost.empty());
  CHECK(r.half_done.empty());
  // At-least-once: the killed run is the one duplicate, and it is counted.
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}

TEST_CASE("040 reliable-queue: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice") { check_reliable_kill_restart("040-reliable-queue"); }

TEST_CASE("033 processing-list: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice") { check_reliable_kill_restart("033-processing-list"); }

TEST_CASE("035 bad-deliveries: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice") { check_reliable_kill_restart("035-bad-deliveries"); }

TEST_CASE("043 named-list: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice") { check_reliable_kill_restart("043-named-list"); }

static void check_pool_kill_restart(const char* name) {
  auto r = run(name);
  INFO(r.transcript);
  CHECK(r.killed.size() == 2);
  CHECK(r.lost.empty());
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}

TEST_CASE("050 worker-pool: after SIGKILL with every worker mid-job and a restart, every job is done and each interrupted one ran twice") { check_pool_kill_restart("050-worker-pool"); }

TEST_CASE("045 worker-pool: after SIGKILL with every worker mid-job and a restart, every job is done and each interrupted one ran twice") { check_pool_kill_restart("045-worker-pool"); }

// A pool of 3 is killed with every worker mid-job and restarted with 1:
// the jobs of workers 1 and 2 sit in lists the new pool has no worker for.
struct Shrunk {
  std::vector<std::string> ids;
  std::unique_ptr<testkit::Process> p;  // the pool of 1, idle
};

static Shrunk kill_and_restart_smaller(testkit::RedisServer& redis, const char* name) {
  const auto& s = stage(name);
  Settings cfg;
  cfg.workers = 3;
  Shrunk r;
  r.ids = push_jobs(redis.client(), cfg.queue, "j", 3, 4);
  {
    auto p = start(s, redis, cfg);
    for (int i = 0; i < 3; ++i) p->expect_line(": step 1/", milliseconds(10000));
    p->kill();
  }
  cfg.workers = 1;
  r.p = start(s, redis, cfg);
  r.p->expect_line("idle: queue empty", milliseconds(20000));
  return r;
}

TEST_CASE("050 worker-pool: a pool restarted with fewer workers still recovers the jobs of the missing ones") {
  testkit::RedisServer redis;
  auto r = kill_and_restart_smaller(redis, "050-worker-pool");
  auto& c = redis.client();
  INFO(r.p->transcript());
  for (auto& id : r.ids) CHECK(r.p->out().find("recovered: 'id=" + id + " steps=4'") != std::string::npos);
  for (auto& id : r.ids) CHECK(job_state(c, "jobs", id).done);
  CHECK(waiting_payloads(c, "jobs").empty());
  r.p->send_signal(SIGTERM);
  CHECK(r.p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("045 worker-pool: a pool restarted with fewer workers leaves the jobs of the missing ones in their lists for ever") {
  testkit::RedisServer redis;
  auto r = kill_and_restart_smaller(redis, "045-worker-pool");
  auto& c = redis.client();
  INFO(r.p->transcript());
  // Worker 0's list was recovered; the lists of workers 1 and 2 were not,
  // and the pool is idle: nothing will ever look at them.
  CHECK(c.integer({"LLEN", "jobs:processing:worker:0"}) == 0);
  CHECK(c.integer({"LLEN", "jobs:processing:worker:1"}) + c.integer({"LLEN", "jobs:processing:worker:2"}) == 2);
  int done = 0;
  for (auto& id : r.ids) done += job_state(c, "jobs", id).done ? 1 : 0;
  CHECK(done == 1);
  r.p->send_signal(SIGTERM);
  CHECK(r.p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("060 leased-names: after SIGKILL with every worker mid-job, a restart under the same name waits out the old lease and runs each interrupted job again") {
  auto r = run("060-leased-names");
  INFO(r.transcript);
  CHECK(r.killed.size() == 2);
  CHECK(r.lost.empty());
  CHECK(r.transcript.find("lease jobs:lease:worker is held: waiting for it to expire") != std::string::npos);
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}

TEST_CASE("110 streams: after SIGKILL with every worker mid-job, a restart reclaims each interrupted job once it has been idle for --min-idle-ms") {
  auto r = run("110-streams");
  INFO(r.transcript);
  CHECK(r.killed.size() == 2);
  CHECK(r.lost.empty());
  CHECK(r.transcript.find("reclaimed: 'id=j1 steps=4'") != std::string::npos);
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}
