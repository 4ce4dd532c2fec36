// Columns "handles SIGTERM" and "no lost work": SIGTERM arrives while every
// worker is at step 1 of 4 of a job, with two more jobs queued behind.
#include <catch2/catch.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

MidJob mid_job(const char* name, int sig = SIGTERM) {
  testkit::RedisServer redis;
  return stop_mid_job(redis, stage(name), Settings{}, sig);
}

// The job in progress was finished, and nothing queued behind it was taken.
void require_finished_and_nothing_taken(const MidJob& r) {
  INFO(r.transcript);
  REQUIRE_FALSE(r.running.empty());
  for (auto& st : r.running_after) {
    CHECK(st.done);
    CHECK(st.steps_written == r.steps);
    CHECK_FALSE(st.waiting);  // not left in a processing list either
  }
  CHECK(r.behind_waiting == 2);
  CHECK(r.behind_started == 0);
  CHECK(r.nothing_lost());
}

void require_clean_exit(const MidJob& r) {
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->ok());
  CHECK(r.out.find("shutdown: complete") != std::string::npos);
}

}  // namespace

TEST_CASE("010 naive-loop: SIGTERM kills the worker, which never exits on its own") {
  auto r = mid_job("010-naive-loop");
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->killed_by(SIGTERM));
}

TEST_CASE("010 naive-loop: the job running at SIGTERM is left half done and gone from the queue") {
  auto r = mid_job("010-naive-loop");
  INFO(r.transcript);
  REQUIRE(r.running_after.size() == 1);
  CHECK(r.running_after[0].half_done());
  CHECK(r.running_after[0].steps_written < r.steps);
  CHECK_FALSE(r.running_after[0].waiting);
  CHECK_FALSE(r.nothing_lost());
}

TEST_CASE("020 flag-around-sleep: SIGTERM mid-job ends the worker with exit 0") {
  require_clean_exit(mid_job("020-flag-around-sleep"));
}

TEST_CASE("020 flag-around-sleep: the job running at SIGTERM is finished and the queued ones stay queued") {
  require_finished_and_nothing_taken(mid_job("020-flag-around-sleep"));
}

TEST_CASE("025 stop-token: SIGTERM mid-job ends the worker with exit 0") {
  require_clean_exit(mid_job("025-stop-token"));
}

TEST_CASE("025 stop-token: the job running at SIGTERM is finished and the queued ones stay queued") {
  require_finished_and_nothing_taken(mid_job("025-stop-token"));
}

TEST_CASE("030 interruptible-wait: SIGTERM mid-job ends the worker with exit 0") {
  require_clean_exit(mid_job("030-interruptible-wait"));
}

TEST_CASE("030 interruptible-wait: the job running at SIGTERM is finished and the queued ones stay queued") {
  require_finished_and_nothing_taken(mid_job("030-interruptible-wait"));
}

static void check_clean_exit(const char* name) {
  require_clean_exit(mid_job(name));
}

TEST_CASE("040 reliable-queue: SIGTERM mid-job ends the worker with exit 0") { check_clean_exit("040-reliable-queue"); }

TEST_CASE("033 processing-list: SIGTERM mid-job ends the worker with exit 0") { check_clean_exit("033-processing-list"); }

TEST_CASE("035 bad-deliveries: SIGTERM mid-job ends the worker with exit 0") { check_clean_exit("035-bad-deliveries"); }

TEST_CASE("043 named-list: SIGTERM mid-job ends the worker with exit 0") { check_clean_exit("043-named-list"); }

TEST_CASE("040 reliable-queue: SIGINT is handled like SIGTERM") {
  require_clean_exit(mid_job("040-reliable-queue", SIGINT));
}

static void check_reliable_finished(const char* name) {
  require_finished_and_nothing_taken(mid_job(name));
}

TEST_CASE("040 reliable-queue: the job running at SIGTERM is finished, acknowledged, and no new job is taken") { check_reliable_finished("040-reliable-queue"); }

TEST_CASE("033 processing-list: the job running at SIGTERM is finished, acknowledged, and no new job is taken") { check_reliable_finished("033-processing-list"); }

TEST_CASE("035 bad-deliveries: the job running at SIGTERM is finished, acknowledged, and no new job is taken") { check_reliable_finished("035-bad-deliveries"); }

TEST_CASE("043 named-list: the job running at SIGTERM is finished, acknowledged, and no new job is taken") { check_reliable_finished("043-named-list"); }

TEST_CASE("050 worker-pool: SIGTERM with every worker mid-job ends the pool with exit 0") { check_clean_exit("050-worker-pool"); }

TEST_CASE("045 worker-pool: SIGTERM with every worker mid-job ends the pool with exit 0") { check_clean_exit("045-worker-pool"); }

static void check_pool_finished(const char* name) {
  auto r = mid_job(name);
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("050 worker-pool: every job running at SIGTERM is finished and the queued ones stay queued") { check_pool_finished("050-worker-pool"); }

TEST_CASE("045 worker-pool: every job running at SIGTERM is finished and the queued ones stay queued") { check_pool_finished("045-worker-pool"); }

TEST_CASE("060 leased-names: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("060-leased-names"));
}

TEST_CASE("060 leased-names: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("060-leased-names");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("110 streams: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("110-streams"));
}

TEST_CASE("110 streams: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("110-streams");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("070 attempt-cap: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("070-attempt-cap"));
}

TEST_CASE("070 attempt-cap: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("070-attempt-cap");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("080 claim-key: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("080-claim-key"));
}

TEST_CASE("080 claim-key: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("080-claim-key");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("090 hand-back: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("090-hand-back"));
}

TEST_CASE("090 hand-back: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("090-hand-back");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("100 unblock-idle: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("100-unblock-idle"));
}

TEST_CASE("100 unblock-idle: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("100-unblock-idle");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

TEST_CASE("105 expire-keys: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("105-expire-keys"));
}

TEST_CASE("105 expire-keys: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("105-expire-keys");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

namespace {

// The stop arrives while the worker is blocked in BLMOVE on an empty queue,
// and then a producer pushes a job, which the blocked BLMOVE takes at once:
// a delivery that comes after the stop.
struct LateJob {
  bool started = false;      // the worker ran it
  bool handed_back = false;  // the worker gave it back untouched
  std::optional<testkit::ExitStatus> status;
  JobState st;
  std::string transcript;
};

// The signal thread prints "shutdown: SIGTERM received" and then calls
// request_stop(); after that it sleeps in sigwait for a second signal. So a
// thread of the stage back in rt_sigtimedwait after that line means the stop
// request has been made.
bool stop_requested(pid_t pid) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  for (auto& t : std::filesystem::directory_iterator(tasks)) {
    std::ifstream wchan(t.path() / "wchan");
    std::string where;
    wchan >> where;
    if (where.find("sigtimedwait") != std::string::npos) return true;
  }
  return false;
}

LateJob job_after_stop(const char* name) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    testkit::RedisServer redis;
    auto& c = redis.client();
    Settings cfg;
    cfg.block = testkit::scaled(milliseconds(3000));
    cfg.budget = cfg.block + testkit::scaled(milliseconds(5000));
    cfg.step = milliseconds(10);
    auto p = start(stage(name), redis, cfg);
    auto deadline = std::chrono::steady_clock::now() + testkit::scaled(milliseconds(10000));
    while (blocked_clients(c) == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));  // polling, not waiting for it
    p->send_signal(SIGTERM);
    p->expect_line("shutdown: SIGTERM received", milliseconds(5000));
    while (!stop_requested(p->pid()) && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(milliseconds(1));  // polling, not waiting for it
    if (blocked_clients(c) == 0) continue;  // BLMOVE timed out and the worker left: try again
    c.command({"RPUSH", cfg.queue, payload("late", 1)});
    LateJob r;
    r.status = p->expect_exit(cfg.budget + milliseconds(5000));
    r.transcript = p->transcript();
    r.started = p->out().find("job late: start") != std::string::npos;
    r.handed_back = p->out().find("'id=late steps=1' handed back to the queue untouched") != std::string::npos;
    r.st = job_state(c, cfg.queue, "late");
    if (!r.started && !r.handed_back) continue;  // BLMOVE timed out just before the push: try again
    return r;
  }
  FAIL("the stop never caught the worker blocked in BLMOVE");
  return {};
}

}  // namespace

TEST_CASE("033 processing-list: a job that arrives while the stop waits out BLMOVE is taken and run before the exit") {
  auto r = job_after_stop("033-processing-list");
  INFO(r.transcript);
  CHECK(r.started);
  CHECK(r.st.attempts == 1);
  CHECK(r.st.done);
}

static void check_late_job_handed_back(const char* name) {
  auto r = job_after_stop(name);
  INFO(r.transcript);
  REQUIRE(r.status);
  CHECK(r.status->ok());
  CHECK(r.handed_back);
  CHECK_FALSE(r.started);
  CHECK(r.st.attempts == 0);
  CHECK(r.st.waiting);  // back at the head of the queue, for the next worker
}

TEST_CASE("035 bad-deliveries: a job that arrives while the stop waits out BLMOVE is handed back to the queue untouched") {
  check_late_job_handed_back("035-bad-deliveries");
}

TEST_CASE("040 reliable-queue: a job that arrives while the stop waits out BLMOVE is handed back to the queue untouched") {
  check_late_job_handed_back("040-reliable-queue");
}

TEST_CASE("043 named-list: a job that arrives while the stop waits out BLMOVE is handed back to the queue untouched") {
  check_late_job_handed_back("043-named-list");
}
