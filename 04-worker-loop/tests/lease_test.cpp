// Column "survives SIGKILL" with names that change: two live processes with
// one --name, and a worker killed and never started again under its name.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace worker_loop;
using testkit::scaled;

namespace {

Settings one_worker(const std::string& name) {
  Settings cfg;
  cfg.workers = 1;
  cfg.name = name;
  cfg.step = milliseconds(200);
  return cfg;
}

// A: one worker named "w", busy with j1 (10 steps of 200 ms). Then B starts
// with the same name.
struct SameName {
  std::unique_ptr<testkit::Process> a, b;
  std::optional<testkit::ExitStatus> b_status;
};

SameName start_same_name(testkit::RedisServer& redis, const Stage& s) {
  auto cfg = one_worker("w");
  cfg.lease = milliseconds(1000);
  push_jobs(redis.client(), cfg.queue, "j", 1, 10);
  SameName r;
  r.a = start(s, redis, cfg);
  r.a->expect_line("job j1: step 1/", milliseconds(10000));
  r.b = std::make_unique<testkit::Process>(command_line(s, redis, cfg));
  return r;
}

// A worker named "a" is killed at step 1 of j1 and never comes back; a
// worker named "b" runs on the same queue.
void kill_a_start_b(testkit::RedisServer& redis, const Stage& s, std::unique_ptr<testkit::Process>& b) {
  auto cfg = one_worker("a");
  cfg.lease = milliseconds(1000);
  push_jobs(redis.client(), cfg.queue, "j", 2, 4);
  {
    auto a = start(s, redis, cfg);
    a->expect_line("job j1: step 1/", milliseconds(10000));
    a->kill();
  }
  auto cfg_b = one_worker("b");
  cfg_b.lease = cfg.lease;
  b = start(s, redis, cfg_b);
}

}  // namespace

static void check_same_name_requeues(const char* name) {
  testkit::RedisServer redis;
  auto r = start_same_name(redis, stage(name));
  r.b->expect_line("ready", milliseconds(10000));
  r.b->expect_line("job j1: start", milliseconds(10000));
  INFO(r.a->transcript() << "\n" << r.b->transcript());
  CHECK(r.a->running());
  CHECK(r.a->out().find("job j1: done") == std::string::npos);  // A is still on it
  CHECK(job_state(redis.client(), "jobs", "j1").attempts == 2);
}

TEST_CASE("050 worker-pool: a second live process with the same --name requeues the first one's job, which then runs twice at once") {
  check_same_name_requeues("050-worker-pool");
}

TEST_CASE("043 named-list: a second live process with the same --name requeues the first one's job, which then runs twice at once") {
  check_same_name_requeues("043-named-list");
}

// 040 has one processing list per queue: any second process is "the same
// name" (start_same_name's --name is not passed to a stage without one).
TEST_CASE("040 reliable-queue: a second live process on the same queue requeues the first one's job, which then runs twice at once") {
  check_same_name_requeues("040-reliable-queue");
}

TEST_CASE("033 processing-list: a second live process on the same queue requeues the first one's job, which then runs twice at once") {
  check_same_name_requeues("033-processing-list");
}

TEST_CASE("035 bad-deliveries: a second live process on the same queue requeues the first one's job, which then runs twice at once") {
  check_same_name_requeues("035-bad-deliveries");
}

static void check_other_name_leaves_job(const char* name) {
  testkit::RedisServer redis;
  auto& c = redis.client();
  auto cfg = one_worker("w");
  push_jobs(c, cfg.queue, "j", 1, 10);
  SameName r;
  r.a = start(stage(name), redis, cfg);
  r.a->expect_line("job j1: step 1/", milliseconds(10000));
  r.b = start(stage(name), redis, one_worker("v"));
  r.b->expect_line("idle: queue empty", milliseconds(10000));
  r.a->expect_line("job j1: done", milliseconds(10000));
  INFO(r.a->transcript() << "\n" << r.b->transcript());
  CHECK(r.b->out().find("recovered") == std::string::npos);
  CHECK(r.b->out().find("job j1") == std::string::npos);
  CHECK(job_state(c, "jobs", "j1").attempts == 1);
  r.a->send_signal(SIGTERM);
  r.b->send_signal(SIGTERM);
  CHECK(r.a->expect_exit(milliseconds(5000)).ok());
  CHECK(r.b->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("043 named-list: a second live process with another --name leaves the first one's job alone, and it runs once") {
  check_other_name_leaves_job("043-named-list");
}

TEST_CASE("060 leased-names: a second live process with the same --name refuses to start, exit 1, and the first one's job runs once") {
  testkit::RedisServer redis;
  auto r = start_same_name(redis, stage("060-leased-names"));
  auto status = r.b->expect_exit(scaled(milliseconds(10000)));
  INFO(r.a->transcript() << "\n" << r.b->transcript());
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK(r.b->err().find("error: --name w is in use: lease jobs:lease:w is held by a live process") !=
        std::string::npos);
  CHECK(r.b->out().find("ready") == std::string::npos);
  r.a->expect_line("job j1: done", milliseconds(10000));
  CHECK(job_state(redis.client(), "jobs", "j1").attempts == 1);
  r.a->send_signal(SIGTERM);
  CHECK(r.a->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("050 worker-pool: the job of a worker killed and never started again under its name stays in its processing list for ever") {
  testkit::RedisServer redis;
  std::unique_ptr<testkit::Process> b;
  kill_a_start_b(redis, stage("050-worker-pool"), b);
  b->expect_line("job j2: done", milliseconds(10000));
  b->expect_line("idle: queue empty", milliseconds(10000));
  INFO(b->transcript());
  auto& c = redis.client();
  CHECK(c.array({"LRANGE", "jobs:processing:a:0", "0", "-1"}) == std::vector<std::string>{payload("j1", 4)});
  CHECK_FALSE(job_state(c, "jobs", "j1").done);
}

TEST_CASE("060 leased-names: the job of a worker killed and never started again is reaped by another worker once its lease expires") {
  testkit::RedisServer redis;
  std::unique_ptr<testkit::Process> b;
  kill_a_start_b(redis, stage("060-leased-names"), b);
  b->expect_line("reaped: 'id=j1 steps=4' was left in jobs:processing:a:0 by expired lease a",
                 scaled(milliseconds(10000)));
  b->expect_line("job j1: done", milliseconds(10000));
  INFO(b->transcript());
  auto& c = redis.client();
  CHECK(job_state(c, "jobs", "j1").done);
  CHECK(job_state(c, "jobs", "j1").attempts == 2);
  CHECK(waiting_payloads(c, "jobs").empty());
  b->send_signal(SIGTERM);
  CHECK(b->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("060 leased-names: a clean exit releases the lease, so the name can be used again at once") {
  testkit::RedisServer redis;
  auto cfg = one_worker("w");
  cfg.lease = milliseconds(60000);
  const auto& s = stage("060-leased-names");
  {
    auto p = start(s, redis, cfg);
    p->expect_line("idle: queue empty", milliseconds(10000));
    p->send_signal(SIGTERM);
    CHECK(p->expect_exit(milliseconds(5000)).ok());
  }
  CHECK(redis.client().integer({"EXISTS", "jobs:lease:w"}) == 0);
  auto p = start(s, redis, cfg);  // would wait 60 s for a lease left behind
  CHECK(p->out().find("waiting") == std::string::npos);
}
