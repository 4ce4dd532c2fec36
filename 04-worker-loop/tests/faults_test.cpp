// Faults: malformed payloads, duplicate deliveries, a dropped Redis
// connection, a Redis restart, and Redis unreachable at start.
#include <catch2/catch.hpp>

#include "scenarios.hpp"
#include "testkit/net.hpp"

using namespace worker_loop;

namespace {

// Where the Redis connection of the worker (not the test's) is cut.
void drop_worker_connections(testkit::RedisServer& redis) {
  // SKIPME yes (the default) spares the test's own connection.
  redis.client().command({"CLIENT", "KILL", "TYPE", "normal"});
}

}  // namespace

static void check_dead_letter(const char* name) {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(10);
  const std::vector<std::string> bad = {
      "",
      "garbage",
      "id= steps=2",
      "id=has space steps=2",
      "id=x steps=0",
      "id=x steps=abc",
      "id=x steps=99999999999999999999",
      std::string("id=\xff\x00 steps=1", 14),
      "id=" + std::string(65, 'a') + " steps=1",
      "id=x",
  };
  c.command({"RPUSH", cfg.queue, payload("j1", 2)});
  for (auto& p : bad) c.command({"RPUSH", cfg.queue, p});
  c.command({"RPUSH", cfg.queue, payload("j2", 2)});

  auto p = start(stage(name), redis, cfg);
  p->expect_line("job j2: done", milliseconds(10000));
  auto dead = c.array({"LRANGE", cfg.queue + ":dead", "0", "-1"});
  INFO(p->transcript());
  REQUIRE(dead.size() == bad.size());
  for (std::size_t i = 0; i < bad.size(); ++i) {
    INFO("dead-letter entry " << i);
    CHECK(dead[i].rfind("reason=", 0) == 0);
    CHECK(dead[i].size() > bad[i].size());
    CHECK(dead[i].substr(dead[i].size() - bad[i].size()) == bad[i]);  // the payload, byte for byte
  }
  CHECK(c.integer({"LLEN", cfg.queue + ":processing"}) == 0);
  CHECK(c.smembers(cfg.queue + ":done") == std::set<std::string>{"j1", "j2"});
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("040 reliable-queue: malformed payloads go to the dead-letter list with a reason, and the worker keeps going") { check_dead_letter("040-reliable-queue"); }

TEST_CASE("035 bad-deliveries: malformed payloads go to the dead-letter list with a reason, and the worker keeps going") { check_dead_letter("035-bad-deliveries"); }

TEST_CASE("043 named-list: malformed payloads go to the dead-letter list with a reason, and the worker keeps going") { check_dead_letter("043-named-list"); }

static void check_malformed_dropped(const char* name) {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.interval = milliseconds(10);
  c.command({"RPUSH", cfg.queue, "garbage", payload("j1", 1)});
  auto p = start(stage(name), redis, cfg);
  p->expect_line("job j1: done", milliseconds(10000));
  INFO(p->transcript());
  CHECK(p->err().find("job dropped: malformed payload 'garbage'") != std::string::npos);
  CHECK(c.integer({"EXISTS", cfg.queue, cfg.queue + ":dead"}) == 0);
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("030 interruptible-wait: a malformed payload is dropped for good, there is no dead-letter list") { check_malformed_dropped("030-interruptible-wait"); }

TEST_CASE("033 processing-list: a malformed payload is dropped for good, there is no dead-letter list") { check_malformed_dropped("033-processing-list"); }

static void check_duplicate_acked(const char* name) {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(10);
  c.command({"RPUSH", cfg.queue, payload("j1", 2), payload("j1", 2)});
  auto p = start(stage(name), redis, cfg);
  p->expect_line("job j1: already done, duplicate acknowledged", milliseconds(10000));
  INFO(p->transcript());
  CHECK(job_state(c, cfg.queue, "j1").attempts == 1);
  CHECK(waiting_payloads(c, cfg.queue).empty());
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("040 reliable-queue: a job pushed twice by a producer runs once and the duplicate is acknowledged") { check_duplicate_acked("040-reliable-queue"); }

TEST_CASE("035 bad-deliveries: a job pushed twice by a producer runs once and the duplicate is acknowledged") { check_duplicate_acked("035-bad-deliveries"); }

TEST_CASE("043 named-list: a job pushed twice by a producer runs once and the duplicate is acknowledged") { check_duplicate_acked("043-named-list"); }

TEST_CASE("040 reliable-queue: a Redis connection cut mid-job is re-established and the interrupted job completed") {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(200);
  auto ids = push_jobs(c, cfg.queue, "j", 2, 4);
  auto p = start(stage("040-reliable-queue"), redis, cfg);
  p->expect_line("job j1: step 1/4", milliseconds(10000));
  drop_worker_connections(redis);
  p->expect_line("redis: connection lost", milliseconds(5000));
  p->expect_line("redis: reconnected", milliseconds(5000));
  p->expect_line("recovered: 'id=j1 steps=4'", milliseconds(5000));
  p->expect_line("job j2: done", milliseconds(10000));
  INFO(p->transcript());
  for (auto& id : ids) CHECK(job_state(c, cfg.queue, id).done);
  CHECK(job_state(c, cfg.queue, "j1").attempts == 2);  // at-least-once: the cut run is the duplicate
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("030 interruptible-wait: a Redis connection cut mid-job ends the worker with exit 1 and loses the job") {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(200);
  push_jobs(c, cfg.queue, "j", 1, 4);
  auto p = start(stage("030-interruptible-wait"), redis, cfg);
  p->expect_line("job j1: step 1/4", milliseconds(10000));
  drop_worker_connections(redis);
  auto status = p->expect_exit(milliseconds(5000));
  INFO(p->transcript());
  CHECK(status.exited);
  CHECK(status.code == 1);
  auto st = job_state(c, cfg.queue, "j1");
  CHECK(st.half_done());
  CHECK_FALSE(st.waiting);
}

// Without persistence (the test kit runs redis-server with --save '' and
// --appendonly no) a restart empties the server: the queue and the job in
// progress vanish with it, whatever the worker does. What the worker owes is
// to survive the outage and serve what producers push afterwards; here the
// producer re-sends j1, the job the restart wiped out.
TEST_CASE("040 reliable-queue: across a Redis restart mid-job the worker reconnects and completes the jobs pushed afterwards") {
  testkit::RedisServer redis;
  Settings cfg;
  cfg.step = milliseconds(200);
  push_jobs(redis.client(), cfg.queue, "j", 1, 4);
  auto p = start(stage("040-reliable-queue"), redis, cfg);
  p->expect_line("job j1: step 1/4", milliseconds(10000));
  redis.stop();
  p->expect_line("redis: connection lost", milliseconds(5000));
  redis.start();
  p->expect_line("redis: reconnected", milliseconds(10000));
  auto& c = redis.client();
  auto ids = push_jobs(c, cfg.queue, "j", 3, 2);  // j1 again, then j2 and j3
  p->expect_line("job j3: done", milliseconds(10000));
  INFO(p->transcript());
  CHECK(c.smembers(cfg.queue + ":done") == std::set<std::string>(ids.begin(), ids.end()));
  CHECK(p->running());
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("every stage: Redis unreachable at start is exit 1 with a message naming the address") {
  int port = testkit::free_port();  // nothing listens there
  for (auto& s : stages()) {
    testkit::Process p({binary(s), "--redis", "127.0.0.1:" + std::to_string(port)});
    auto status = p.expect_exit(milliseconds(10000));
    INFO(p.transcript());
    CHECK(status.exited);
    CHECK(status.code == 1);
    CHECK(p.err().find("cannot connect to Redis at 127.0.0.1:" + std::to_string(port)) != std::string::npos);
    CHECK(p.out().find("ready") == std::string::npos);
  }
}

TEST_CASE("033 processing-list: a job pushed twice by a producer runs twice") {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(10);
  c.command({"RPUSH", cfg.queue, payload("j1", 2), payload("j1", 2), payload("j2", 1)});
  auto p = start(stage("033-processing-list"), redis, cfg);
  p->expect_line("job j2: done", milliseconds(10000));
  INFO(p->transcript());
  CHECK(job_state(c, cfg.queue, "j1").attempts == 2);
  CHECK(p->out().find("attempt 2: an earlier run did not finish") != std::string::npos);  // and it says so wrongly
  p->send_signal(SIGTERM);
  CHECK(p->expect_exit(milliseconds(5000)).ok());
}

// 033 and 035 keep the job in Redis but cannot reconnect: the worker dies,
// and the job waits in the processing list until the next start.
static void check_cut_exits(const char* name) {
  testkit::RedisServer redis;
  auto& c = redis.client();
  Settings cfg;
  cfg.step = milliseconds(200);
  push_jobs(c, cfg.queue, "j", 1, 4);
  const auto& s = stage(name);
  auto p = start(s, redis, cfg);
  p->expect_line("job j1: step 1/4", milliseconds(10000));
  drop_worker_connections(redis);
  auto status = p->expect_exit(milliseconds(5000));
  INFO(p->transcript());
  CHECK(status.exited);
  CHECK(status.code == 1);
  auto st = job_state(c, cfg.queue, "j1");
  CHECK_FALSE(st.done);
  CHECK(st.waiting);  // in the processing list
  cfg.step = milliseconds(10);
  auto again = start(s, redis, cfg);  // recovery happens before "ready"
  again->expect_line("job j1: done", milliseconds(10000));
  again->send_signal(SIGTERM);
  CHECK(again->expect_exit(milliseconds(5000)).ok());
}

TEST_CASE("033 processing-list: a Redis connection cut mid-job ends the worker with exit 1; the job waits in the processing list for the next start") {
  check_cut_exits("033-processing-list");
}

TEST_CASE("035 bad-deliveries: a Redis connection cut mid-job ends the worker with exit 1; the job waits in the processing list for the next start") {
  check_cut_exits("035-bad-deliveries");
}
