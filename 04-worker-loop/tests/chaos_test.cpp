// The chaos experiment (see scenarios.hpp): 1000 jobs, three worker
// processes, kill -9 at random moments, new names, one never restarted.
// The seed is printed; CHAOS_SEED=<n> replays a run.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <random>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

unsigned seed() {
  if (const char* s = std::getenv("CHAOS_SEED")) return static_cast<unsigned>(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}

// Under sanitizers (TESTKIT_TIMEOUT_SCALE > 1) everything is several times
// slower: fewer jobs, the same kills and the same checks.
int jobs() { return testkit::scaled(milliseconds(1000)).count() > 1000 ? 300 : 1000; }

Chaos run(const char* name) {
  testkit::RedisServer redis;
  unsigned s = seed();
  std::printf("chaos %s: seed %u (replay with CHAOS_SEED=%u)\n", name, s, s);
  auto r = chaos(redis, stage(name), s, jobs());
  std::printf("chaos %s: %s\n", name, r.summary().c_str());
  return r;
}

}  // namespace

TEST_CASE("050 worker-pool: under chaos the jobs of killed workers are stranded in their processing lists") {
  auto r = run("050-worker-pool");
  INFO(r.summary());
  CHECK_FALSE(r.stranded.empty());
  CHECK(r.stranded == r.lost);
}

TEST_CASE("100 unblock-idle: under chaos every job is done, none stranded, none run more often than the cap, duplicates counted") {
  auto r = run("100-unblock-idle");
  INFO(r.summary());
  CHECK(r.lost.empty());
  CHECK(r.stranded.empty());
  CHECK(r.over_cap.empty());
  CHECK(r.dead_lettered == 0);
  CHECK(r.elapsed_ms < testkit::scaled(milliseconds(60000)).count());
}

TEST_CASE("105 expire-keys: under chaos every job is done, none stranded, none run more often than the cap, duplicates counted") {
  auto r = run("105-expire-keys");
  INFO(r.summary());
  CHECK(r.lost.empty());
  CHECK(r.stranded.empty());
  CHECK(r.over_cap.empty());
  CHECK(r.dead_lettered == 0);
  CHECK(r.elapsed_ms < testkit::scaled(milliseconds(60000)).count());
}

TEST_CASE("110 streams: under chaos every job is done, none stranded, none run more often than the cap, duplicates counted") {
  auto r = run("110-streams");
  INFO(r.summary());
  CHECK(r.lost.empty());
  CHECK(r.stranded.empty());
  CHECK(r.over_cap.empty());
  CHECK(r.dead_lettered == 0);
  CHECK(r.elapsed_ms < testkit::scaled(milliseconds(60000)).count());
}
