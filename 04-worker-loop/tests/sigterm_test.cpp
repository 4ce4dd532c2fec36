// Columns "handles SIGTERM" and "no lost work": SIGTERM arrives while every
// worker is at step 1 of 4 of a job, with two more jobs queued behind.
#include <catch2/catch.hpp>

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

TEST_CASE("040 reliable-queue: SIGTERM mid-job ends the worker with exit 0") {
  require_clean_exit(mid_job("040-reliable-queue"));
}

TEST_CASE("040 reliable-queue: SIGINT is handled like SIGTERM") {
  require_clean_exit(mid_job("040-reliable-queue", SIGINT));
}

TEST_CASE("040 reliable-queue: the job running at SIGTERM is finished, acknowledged, and no new job is taken") {
  require_finished_and_nothing_taken(mid_job("040-reliable-queue"));
}

TEST_CASE("050 worker-pool: SIGTERM with every worker mid-job ends the pool with exit 0") {
  require_clean_exit(mid_job("050-worker-pool"));
}

TEST_CASE("050 worker-pool: every job running at SIGTERM is finished and the queued ones stay queued") {
  auto r = mid_job("050-worker-pool");
  CHECK(r.running.size() == 2);
  require_finished_and_nothing_taken(r);
}

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
