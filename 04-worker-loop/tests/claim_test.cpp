// Two copies of one job (a producer that pushed it twice) and two worker
// processes: do the copies ever run at the same time?
#include <catch2/catch.hpp>

#include <thread>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

// A (one worker) is at step 1 of j1 when B (another name) starts and takes
// the second copy of j1.
struct TwoCopies {
  std::unique_ptr<testkit::Process> a, b;
};

Settings one_worker(const std::string& name) {
  Settings cfg;
  cfg.workers = 1;
  cfg.name = name;
  cfg.step = milliseconds(200);
  cfg.lease = milliseconds(2000);
  return cfg;
}

TwoCopies start_two_copies(testkit::RedisServer& redis, const Stage& s) {
  auto cfg = one_worker("a");
  auto& c = redis.client();
  c.command({"RPUSH", cfg.queue, payload("j1", 6), payload("j1", 6)});
  TwoCopies r;
  r.a = start(s, redis, cfg);
  r.a->expect_line("job j1: step 1/", milliseconds(10000));
  r.b = start(s, redis, one_worker("b"));
  return r;
}

}  // namespace

TEST_CASE("070 attempt-cap: a job pushed twice runs on two worker processes at the same time") {
  testkit::RedisServer redis;
  auto r = start_two_copies(redis, stage("070-attempt-cap"));
  r.b->expect_line("job j1: start", milliseconds(10000));
  INFO(r.a->transcript() << "\n" << r.b->transcript());
  CHECK(r.a->out().find("job j1: done") == std::string::npos);  // A is still running it
  CHECK(job_state(redis.client(), "jobs", "j1").attempts == 2);
}

TEST_CASE("080 claim-key: a job pushed twice never runs on two worker processes at once and the second copy is acknowledged as a duplicate") {
  testkit::RedisServer redis;
  auto r = start_two_copies(redis, stage("080-claim-key"));
  r.b->expect_line("job j1: claimed by another worker, requeued", milliseconds(10000));
  r.a->expect_line("job j1: done", milliseconds(10000));
  // The second copy is acknowledged by whichever worker takes it next.
  auto& c = redis.client();
  auto deadline = testkit::Clock::now() + testkit::scaled(milliseconds(10000));
  const std::string acked = "job j1: already done, duplicate acknowledged";
  auto printed = [&] { return (r.a->out() + r.b->out()).find(acked) != std::string::npos; };
  while (!printed() && testkit::Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
  INFO(r.a->transcript() << "\n" << r.b->transcript());
  CHECK(printed());
  CHECK(r.b->out().find("job j1: start") == std::string::npos);
  CHECK(job_state(c, "jobs", "j1").attempts == 1);
  CHECK(waiting_payloads(c, "jobs").empty());
  CHECK(c.integer({"EXISTS", "jobs:claim:j1"}) == 0);
  for (auto* p : {r.a.get(), r.b.get()}) {
    p->send_signal(SIGTERM);
    CHECK(p->expect_exit(milliseconds(5000)).ok());
  }
}
