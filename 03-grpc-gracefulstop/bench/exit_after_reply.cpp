// exit-after-reply - time from the last in-flight reply to the server's exit,
// seen by a caller in a process of its own (hold-client), for a caller that
// keeps its channel open (as long-lived services do) and one that closes it.
//
//   exit-after-reply [--runs N] [--work-ms MS] [--hold-client PATH] -- STAGE...
//
// Per run: start the stage (--drain-ms 0 where it has one: the drain is a
// deliberate wait, not overhead), start hold-client with one Work RPC of
// --work-ms, SIGTERM the server once the call runs, and subtract the reply's
// CLOCK_MONOTONIC time (printed by hold-client) from the server's exit time
// (pidfd). Four kinds of callers: one that closes its channel after the
// reply, one that keeps it open and idle, one that keeps it open and keeps
// sending (a Work of 0 ms every 5 ms, from before the stop to after the
// exit), and the second plus another long-lived client that connected and
// stayed idle. Budget 3000 ms. Prints p50 / p90 / max per stage and kind,
// and the ratio of each p50 to the closing client's; and first, the floor:
// the same server killed with SIGKILL while idle, which is the kernel's part
// of any exit (no code of the stage runs).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "scenarios.hpp"
#include "support/flags.hpp"

namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

double percentile(std::vector<double> v, int p) {
  std::sort(v.begin(), v.end());
  return v[(v.size() - 1) * static_cast<std::size_t>(p) / 100];
}

double ms_between(grpcstop::Clock::time_point from, grpcstop::Clock::time_point to) {
  return static_cast<double>(std::chrono::duration_cast<microseconds>(to - from).count()) / 1000.0;
}

// One run: milliseconds from the reply to the server's exit.
enum class Kind { closes, keeps, keeps_sending, keeps_plus_idle };
const char* name(Kind k) {
  switch (k) {
    case Kind::closes: return "client closes";
    case Kind::keeps: return "client keeps channel";
    case Kind::keeps_sending: return "client keeps sending";
    case Kind::keeps_plus_idle: return "keeps + 1 idle client";
  }
  return "";
}

double one_run(const std::string& stage, const std::string& hold_client, testkit::RedisServer& redis,
               long long work_ms, Kind kind) {
  std::vector<std::string> args = {"--shutdown-timeout-ms", "3000"};
  // 040 and every later stage drain; 010 and 020 take no budget at all.
  const std::string base = stage.substr(stage.rfind('/') + 1);
  if (base >= "040") args.insert(args.end(), {"--drain-ms", "0"});
  if (base < "023") args.clear();
  grpcstop::Server server(stage, redis.address(), args);
  std::unique_ptr<testkit::Process> idle;
  if (kind == Kind::keeps_plus_idle) {
    idle = std::make_unique<testkit::Process>(std::vector<std::string>{hold_client, "--connect", server.target()});
    idle->expect_line("connected", milliseconds(10'000));
  }
  std::vector<std::string> client = {hold_client, "--connect", server.target(), "--work-ms", std::to_string(work_ms)};
  if (kind == Kind::closes) client.push_back("--close");
  if (kind == Kind::keeps_sending) client.push_back("--keep-sending");
  testkit::Process caller(client);
  server.process().expect_line("work: started id=hold-", milliseconds(10'000));
  server.process().send_signal(SIGTERM);
  server.process().expect_exit(milliseconds(30'000));
  std::string reply = caller.expect_line("reply:", milliseconds(30'000));
  if (reply.find("reply: OK") == std::string::npos) throw testkit::Failure("the call failed: " + reply);
  const long long at_ns = std::stoll(reply.substr(reply.find("at_ns=") + 6));
  const auto replied = grpcstop::Clock::time_point(std::chrono::nanoseconds(at_ns));
  caller.send_signal(SIGTERM);
  caller.expect_exit(milliseconds(5000));
  return ms_between(replied, server.process().exit_time());
}

// The kernel's part alone: the idle server killed with SIGKILL (no code of
// the stage runs), to the pidfd saying it is gone. Most of it is unmapping
// what the process mapped, shared libraries included.
double kill_floor(const std::string& stage, testkit::RedisServer& redis) {
  grpcstop::Server server(stage, redis.address());
  const auto sent = server.process().send_signal(SIGKILL);
  server.process().expect_exit(milliseconds(30'000));
  return ms_between(sent, server.process().exit_time());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: exit-after-reply [--runs N] [--work-ms MS] [--hold-client PATH] -- STAGE...");
  const int runs = static_cast<int>(flags.integer("--runs", 7, 1, 1000));
  const long long work_ms = flags.integer("--work-ms", 300, 0, 60'000);
  const std::string hold_client = flags.text("--hold-client", "hold-client", 1000);
  flags.done();
  if (flags.rest().empty()) support::Flags::fail("STAGE", "name at least one stage binary");
  try {
    testkit::RedisServer redis;
    for (const std::string& stage : flags.rest()) {
      const std::string short_name = stage.substr(stage.rfind('/') + 1);
      std::vector<double> floor_ms;
      for (int i = 0; i < runs; ++i) floor_ms.push_back(kill_floor(stage, redis));
      std::printf("   %-22s %-22s p50 %7.1f ms  p90 %7.1f ms  max %7.1f ms  (the kernel alone)\n", short_name.c_str(),
                  "SIGKILL while idle", percentile(floor_ms, 50), percentile(floor_ms, 90),
                  *std::max_element(floor_ms.begin(), floor_ms.end()));
      double p50[4] = {0, 0, 0, 0};
      for (Kind kind : {Kind::closes, Kind::keeps, Kind::keeps_sending, Kind::keeps_plus_idle}) {
        std::vector<double> ms;
        for (int i = 0; i < runs; ++i) ms.push_back(one_run(stage, hold_client, redis, work_ms, kind));
        const double p = percentile(ms, 50);
        p50[static_cast<int>(kind)] = p;
        std::printf("   %-22s %-22s p50 %7.1f ms  p90 %7.1f ms  max %7.1f ms", short_name.c_str(), name(kind), p,
                    percentile(ms, 90), *std::max_element(ms.begin(), ms.end()));
        const double closes = p50[static_cast<int>(Kind::closes)];
        if (kind != Kind::closes && closes > 0) std::printf("  (%.1fx the closing client)", p / closes);
        std::printf("\n");
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "exit-after-reply: %s\n", e.what());
    return 1;
  }
}
