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

TEST_CASE("040 reliable-queue: after SIGKILL mid-job and a restart, every job is done and the interrupted one ran twice") {
  auto r = run("040-reliable-queue");
  INFO(r.transcript);
  CHECK(r.lost.empty());
  CHECK(r.half_done.empty());
  // At-least-once: the killed run is the one duplicate, and it is counted.
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}

TEST_CASE("050 worker-pool: after SIGKILL with every worker mid-job and a restart, every job is done and each interrupted one ran twice") {
  auto r = run("050-worker-pool");
  INFO(r.transcript);
  CHECK(r.killed.size() == 2);
  CHECK(r.lost.empty());
  std::map<std::string, long long> expected;
  for (auto& id : r.killed) expected[id] = 2;
  CHECK(r.reruns == expected);
}

TEST_CASE("050 worker-pool: a pool restarted with fewer workers still recovers the jobs of the missing ones") {
  testkit::RedisServer redis;
  const auto& s = stage("050-worker-pool");
  Settings cfg;
  cfg.workers = 3;
  auto& c = redis.client();
  auto ids = push_jobs(c, cfg.queue, "j", 3, 4);
  {
    auto p = start(s, redis, cfg);
    for (int i = 0; i < 3; ++i) p->expect_line(": step 1/", milliseconds(10000));
    p->kill();
  }
  cfg.workers = 1;
  auto p = start(s, redis, cfg);
  for (auto& id : ids) CHECK(p->out().find("recovered: 'id=" + id + " steps=4'") != std::string::npos);
  p->expect_line("idle: queue empty", milliseconds(20000));
  INFO(p->transcript());
  for (auto& id : ids) CHECK(job_state(c, cfg.queue, id).done);
  CHECK(waiting_payloads(c, cfg.queue).empty());
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
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
