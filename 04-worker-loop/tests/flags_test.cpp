// Bad input on the command line: exit 2 and one line on stderr naming the
// flag, before anything else happens.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace worker_loop;

namespace {

struct BadFlag {
  std::vector<std::string> args;
  std::string named;  // the flag the message must name
};

std::vector<BadFlag> bad_flags(const Stage& s) {
  std::string wait = s.reliable ? "--block-ms" : "--interval";
  std::vector<BadFlag> cases = {
      {{wait, "abc"}, wait},
      {{wait, "-5"}, wait},
      {{wait, "99999999999999999999"}, wait},
      {{wait, "10ms"}, wait},
      {{"--step-ms", "-1"}, "--step-ms"},
      {{"--step-ms", "1.5"}, "--step-ms"},
      {{"--redis", "localhost"}, "--redis"},
      {{"--redis", "127.0.0.1:99999"}, "--redis"},
      {{"--queue", ""}, "--queue"},
      {{"--queue", "jobs/urgent"}, "--queue"},
      {{"--queue", std::string(101, 'q')}, "--queue"},
      {{"--queue"}, "--queue"},
      {{"--no-such-flag", "1"}, "--no-such-flag"},
  };
  if (s.budget) {
    cases.push_back({{"--budget-ms", "0"}, "--budget-ms"});
    cases.push_back({{"--budget-ms", "5s"}, "--budget-ms"});
  }
  if (s.reliable) cases.push_back({{"--block-ms", "5000", "--budget-ms", "5000"}, "--block-ms"});
  if (s.pool) {
    cases.push_back({{"--workers", "0"}, "--workers"});
    cases.push_back({{"--workers", "1000"}, "--workers"});
  }
  if (s.pool || s.named) cases.push_back({{"--name", "a:b"}, "--name"});
  if (s.cap) {
    cases.push_back({{"--max-attempts", "0"}, "--max-attempts"});
    cases.push_back({{"--max-attempts", "1001"}, "--max-attempts"});
  }
  if (s.streams) {
    cases.push_back({{"--min-idle-ms", "0"}, "--min-idle-ms"});
    cases.push_back({{"--lease-ms", "1000"}, "--lease-ms"});
  }
  if (s.expiring) {
    cases.push_back({{"--retain-ms", "0"}, "--retain-ms"});
    cases.push_back({{"--retain-ms", "1d"}, "--retain-ms"});
    cases.push_back({{"--retain-ms", "7000", "--lease-ms", "3000", "--budget-ms", "3000"}, "--retain-ms"});
  }
  if (s.lease) {
    cases.push_back({{"--lease-ms", "0"}, "--lease-ms"});
    cases.push_back({{"--lease-ms", "x"}, "--lease-ms"});
  }
  return cases;
}

void check_bad_flags(const char* name) {
  const auto& s = stage(name);
  for (auto& c : bad_flags(s)) {
    std::vector<std::string> argv = {binary(s)};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    auto r = testkit::run_to_exit(argv, milliseconds(10000));
    INFO(r.transcript);
    CHECK(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.err.find(c.named) != std::string::npos);
    CHECK(r.out.empty());
  }
}

}  // namespace

TEST_CASE("010 naive-loop: each bad flag is exit 2 with one line naming it") { check_bad_flags("010-naive-loop"); }
TEST_CASE("020 flag-around-sleep: each bad flag is exit 2 with one line naming it") {
  check_bad_flags("020-flag-around-sleep");
}
TEST_CASE("025 stop-token: each bad flag is exit 2 with one line naming it") { check_bad_flags("025-stop-token"); }
TEST_CASE("030 interruptible-wait: each bad flag is exit 2 with one line naming it") {
  check_bad_flags("030-interruptible-wait");
}
TEST_CASE("033 processing-list: each bad flag is exit 2 with one line naming it") {
  check_bad_flags("033-processing-list");
}
TEST_CASE("035 bad-deliveries: each bad flag is exit 2 with one line naming it") {
  check_bad_flags("035-bad-deliveries");
}
TEST_CASE("043 named-list: each bad flag is exit 2 with one line naming it") { check_bad_flags("043-named-list"); }
TEST_CASE("045 worker-pool: each bad flag is exit 2 with one line naming it") { check_bad_flags("045-worker-pool"); }
TEST_CASE("040 reliable-queue: each bad flag is exit 2 with one line naming it") {
  check_bad_flags("040-reliable-queue");
}
TEST_CASE("050 worker-pool: each bad flag is exit 2 with one line naming it") { check_bad_flags("050-worker-pool"); }
TEST_CASE("060 leased-names: each bad flag is exit 2 with one line naming it") { check_bad_flags("060-leased-names"); }
TEST_CASE("070 attempt-cap: each bad flag is exit 2 with one line naming it") { check_bad_flags("070-attempt-cap"); }
TEST_CASE("080 claim-key: each bad flag is exit 2 with one line naming it") { check_bad_flags("080-claim-key"); }
TEST_CASE("090 hand-back: each bad flag is exit 2 with one line naming it") { check_bad_flags("090-hand-back"); }
TEST_CASE("100 unblock-idle: each bad flag is exit 2 with one line naming it") { check_bad_flags("100-unblock-idle"); }
TEST_CASE("105 expire-keys: each bad flag is exit 2 with one line naming it") { check_bad_flags("105-expire-keys"); }
TEST_CASE("110 streams: each bad flag is exit 2 with one line naming it") { check_bad_flags("110-streams"); }
