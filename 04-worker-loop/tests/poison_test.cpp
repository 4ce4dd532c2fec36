// A poison job: one that kills every worker that runs it. Here the test
// plays the crash, kill -9 as soon as the job starts, three times over.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace worker_loop;
using testkit::scaled;

namespace {

// "p" crashes its worker on every run; "j1" waits behind it. Returns the
// fourth start, after three crashes.
std::unique_ptr<testkit::Process> crash_three_times(testkit::RedisServer& redis, const Stage& s, Settings& cfg) {
  cfg.workers = 1;
  cfg.name = "w";
  cfg.lease = milliseconds(1000);
  cfg.max_attempts = 3;
  cfg.step = milliseconds(50);
  auto& c = redis.client();
  c.command({"RPUSH", cfg.queue, payload("p", 4), payload("j1", 1)});
  for (int i = 0; i < 3; ++i) {
    auto p = start(s, redis, cfg);  // after the first crash: waits out the lease, recovers p to the head
    p->expect_line("job p: start", milliseconds(10000));
    p->kill();
  }
  return start(s, redis, cfg);
}

}  // namespace

TEST_CASE("060 leased-names: a job that crashes its worker runs first again on every restart, for ever") {
  testkit::RedisServer redis;
  Settings cfg;
  auto p = crash_three_times(redis, stage("060-leased-names"), cfg);
  p->expect_line("job p: start", milliseconds(10000));
  INFO(p->transcript());
  CHECK(p->out().find("job j1") == std::string::npos);  // still behind it
  CHECK(job_state(redis.client(), cfg.queue, "p").attempts == 4);
}

TEST_CASE("070 attempt-cap: a job started --max-attempts times without finishing is dead-lettered with the reason, and the queue moves on") {
  testkit::RedisServer redis;
  Settings cfg;
  auto p = crash_three_times(redis, stage("070-attempt-cap"), cfg);
  p->expect_line("job j1: done", milliseconds(10000));
  INFO(p->transcript());
  auto& c = redis.client();
  CHECK(p->out().find("job p: start") == std::string::npos);
  CHECK(job_state(c, cfg.queue, "p").attempts == 3);
  CHECK(c.array({"LRANGE", cfg.queue + ":dead", "0", "-1"}) ==
        std::vector<std::string>{"reason=attempts: started 3 times, never finished (--max-attempts 3) payload=" +
                                 payload("p", 4)});
  CHECK(waiting_payloads(c, cfg.queue).empty());
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}
