// client - the chapter's load generator and checker.
//
//   client [options] -- SERVER [SERVER ARGS]   start a private redis-server
//       and SERVER (with --port 0 --redis ...), hold --streams open, send
//       --rpcs Work RPCs at --rate, SIGTERM the server once --sigterm-after
//       of them are running on it, and print what happened: sent / OK /
//       failed by status code / lost (OK but not persisted) / abandoned /
//       shutdown duration.
//   client [options] --connect HOST:PORT[,HOST:PORT...]   only send the
//       load to running servers (several: round_robin with retries) and
//       print the counts and the rate; --redis checks the ids.
//
// Every status code and message is recorded; --verbose prints one line per RPC.
#include <signal.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "scenarios.hpp"
#include "support/flags.hpp"

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  std::istringstream in(s);
  for (std::string p; std::getline(in, p, sep);) parts.push_back(p);
  return parts;
}

void print_rpcs(const std::vector<grpcstop::RpcResult>& rpcs) {
  for (auto& r : rpcs)
    std::printf("rpc %s: %s%s%s\n", r.id.c_str(), grpcstop::code_name(r.code).c_str(), r.message.empty() ? "" : " ",
                r.message.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  ::signal(SIGPIPE, SIG_IGN);
  support::Flags flags(argc, argv,
                       "usage: client [--rpcs N] [--rate PER_S (0 = no pacing)] [--concurrency N] [--work-ms MS] "
                       "[--streams K] [--idle-clients K] [--sigterm-after N (-1 = after the load)] [--exit-timeout-ms MS] "
                       "[--id-prefix P] [--verbose] (-- SERVER [ARGS] | --connect HOST:PORT[,...] [--redis HOST:PORT])");
  grpcstop::StopOptions options;
  options.load.rpcs = static_cast<int>(flags.integer("--rpcs", 20, 0, 1'000'000));
  options.load.rate = static_cast<int>(flags.integer("--rate", 50, 0, 100'000));
  options.load.concurrency = static_cast<int>(flags.integer("--concurrency", 64, 1, 10'000));
  options.load.work_ms = flags.integer("--work-ms", 300, 0, 60'000);
  options.load.id_prefix = flags.text("--id-prefix", "rpc", 32);
  options.streams = static_cast<int>(flags.integer("--streams", 0, 0, 100));
  // Long-lived callers (hold-client, next to this program): connected, idle.
  options.idle_clients = static_cast<int>(flags.integer("--idle-clients", 0, 0, 10));
  const std::string self = argv[0];
  options.hold_client_binary = self.substr(0, self.rfind('/') + 1) + "hold-client";
  options.sigterm_after = static_cast<int>(flags.integer("--sigterm-after", 0, -1, 1'000'000));
  options.exit_timeout = flags.millis("--exit-timeout-ms", 10'000, 1, 600'000);
  const bool verbose = flags.present("--verbose");
  std::vector<std::string> targets;
  std::optional<std::pair<std::string, int>> redis_address;
  const bool connect_mode = flags.rest().empty();
  if (connect_mode) {
    std::string list = flags.text("--connect", "127.0.0.1:50051", 1000);
    for (auto& t : split(list, ',')) {
      auto colon = t.rfind(':');
      int port = 0;
      if (colon == std::string::npos || std::sscanf(t.c_str() + colon + 1, "%d", &port) != 1 || port < 1 ||
          port > 65535)
        support::Flags::fail("--connect", "expected HOST:PORT[,HOST:PORT...], got '" + list + "'");
      targets.push_back(t);
    }
    redis_address = flags.host_port("--redis", "127.0.0.1:6379");
  }
  flags.done();
  if (options.sigterm_after > options.load.rpcs)
    support::Flags::fail("--sigterm-after", "more than --rpcs: the signal would never be sent");

  try {
    if (connect_mode) {
      // docs:begin connect-mode
      auto channel = grpcstop::channel_to(targets);
      grpcstop::Load load(channel, options.load);
      grpcstop::LoadResult result = load.wait();
      // docs:end connect-mode
      if (verbose) print_rpcs(result.rpcs);
      std::map<std::string, int> by_code;
      std::set<int> servers;
      int ok = 0, lost = 0;
      std::set<std::string> persisted;
      testkit::RedisClient redis(redis_address->first, redis_address->second);
      for (auto& id : redis.smembers("work:done")) persisted.insert(id);
      for (auto& r : result.rpcs) {
        ++by_code[grpcstop::code_name(r.code)];
        if (r.ok()) {
          ++ok;
          servers.insert(r.server_pid);
          if (!persisted.count(r.id)) ++lost;
        }
      }
      double seconds = static_cast<double>(result.elapsed.count()) / 1000.0;
      std::printf("sent:               %zu in %.2f s (%.0f RPCs/s)\n", result.rpcs.size(), seconds,
                  seconds > 0 ? static_cast<double>(result.rpcs.size()) / seconds : 0.0);
      std::printf("ok:                 %d (answered by %zu server processes)\n", ok, servers.size());
      std::printf("failed:             %zu\n", result.rpcs.size() - static_cast<std::size_t>(ok));
      for (auto& [code, n] : by_code)
        if (code != "OK") std::printf("  %s: %d\n", code.c_str(), n);
      std::printf("lost:               %d (answered OK, not in Redis)\n", lost);
      return 0;
    }
    testkit::RedisServer redis;
    std::vector<std::string> server_args(flags.rest().begin() + 1, flags.rest().end());
    std::printf("client: %d RPCs at %d/s, %lld ms of work each, %d stream(s), %d idle client(s); SIGTERM after %d started\n",
                options.load.rpcs, options.load.rate, options.load.work_ms, options.streams, options.idle_clients,
                options.sigterm_after);
    grpcstop::StopReport report = grpcstop::run_stop_scenario(flags.rest().front(), redis, server_args, options);
    if (verbose) print_rpcs(report.load.rpcs);
    std::fputs(grpcstop::render(report).c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "client: %s\n", e.what());
    return 1;
  }
}
