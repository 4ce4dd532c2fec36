// shutdown_bench: the two shutdown latencies of the chapter, as figures.
//
//   drain overhead     last background write finished -> process exit
//                      (Go's http.Server.Shutdown polls for idle connections
//                      with a back-off of up to 500 ms; a tracker that
//                      notifies costs nothing like that)
//   idle stop latency  SIGTERM -> exit with no traffic and no drain delay,
//                      without and with an idle keep-alive connection
//                      (cpp-httplib's stop() alone: up to its 5 s keep-alive
//                      timeout)
//
// Each figure is the p50 / p95 / max of --runs runs. Timestamps are taken
// when this program sees the stage's stdout line and when waitpid reports
// the exit, so they include a pipe hop (tens of microseconds).
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "scenarios.hpp"
#include "support/flags.hpp"
#include "testkit/redis.hpp"

using namespace ch02;
using namespace std::chrono_literals;
using testkit::Clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string summary(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<std::size_t>(q * static_cast<double>(v.size())))]; };
  char buf[128];
  std::snprintf(buf, sizeof buf, "p50 %8.2f ms   p95 %8.2f ms   max %8.2f ms", at(0.5), at(0.95), v.back());
  return buf;
}

// SIGTERM with one write pending; time from its "persisted" line to the exit.
double drain_overhead(const std::string& name, testkit::RedisServer& redis) {
  std::vector<std::string> extra = {"--work-ms", "100", "--trace"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
  auto r = start(name, redis, extra);
  if (!post(r.port, "/incr?id=bench").ok()) throw std::runtime_error(name + ": /incr failed");
  r.process->send_signal(SIGTERM);
  r.process->expect_line("write: id=bench persisted", 5s);
  const auto written = Clock::now();
  if (!r.process->wait_exit(10s)) throw std::runtime_error(name + " did not exit");
  return ms_between(written, r.process->exit_time());
}

// SIGTERM to exit, no traffic (optionally one idle keep-alive connection).
double idle_stop(const std::string& name, testkit::RedisServer& redis, bool keep_alive) {
  std::vector<std::string> extra = {"--work-ms", "0"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
  auto r = start(name, redis, extra);
  std::unique_ptr<KeepAlive> keep;
  if (keep_alive) {
    keep = std::make_unique<KeepAlive>(r.port);
    keep->get("/healthz");
    std::this_thread::sleep_for(100ms);  // let the connection go idle
  }
  const auto t = r.process->send_signal(SIGTERM);
  if (!r.process->wait_exit(20s)) throw std::runtime_error(name + " did not exit");
  return ms_between(t, r.process->exit_time());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: shutdown_bench [--runs N] [--keep-alive-runs N]");
  const int runs = static_cast<int>(flags.integer("--runs", 30, 1, 10'000));
  const int ka_runs = static_cast<int>(flags.integer("--keep-alive-runs", 3, 0, 100));
  flags.done();
  try {
    testkit::RedisServer redis;
    std::printf("drain overhead: last background write finished -> exit (%d runs)\n", runs);
    for (const char* name : {"030-track-background-work", "040-shutdown-deadline", "050-drain-first"}) {
      std::vector<double> v;
      for (int i = 0; i < runs; ++i) v.push_back(drain_overhead(name, redis));
      std::printf("  %-26s %s\n", name, summary(v).c_str());
    }
    std::printf("idle stop latency: SIGTERM -> exit, no traffic, no drain delay (%d runs)\n", runs);
    for (const char* name : {"020-stop-on-signal", "030-track-background-work", "040-shutdown-deadline",
                             "050-drain-first"}) {
      std::vector<double> v;
      for (int i = 0; i < runs; ++i) v.push_back(idle_stop(name, redis, false));
      std::printf("  %-26s %s\n", name, summary(v).c_str());
    }
    if (ka_runs > 0) {
      std::printf("idle stop latency with one idle keep-alive connection (%d runs)\n", ka_runs);
      for (const char* name : {"040-shutdown-deadline", "050-drain-first"}) {
        std::vector<double> v;
        for (int i = 0; i < ka_runs; ++i) v.push_back(idle_stop(name, redis, true));
        std::printf("  %-26s %s\n", name, summary(v).c_str());
      }
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "shutdown_bench failed: %s\n", e.what());
    return 1;
  }
}
