// k8s-sim: one rolling update of a manifest variant, played on loopback
// (see k8s/sim.hpp). Prints the timeline and the outcome; exit 0 when no
// request was dropped, no acknowledged write was lost and the old pod
// stopped by itself; 1 otherwise; 2 on bad flags.
//
//   k8s-sim --variant 05-k8s/manifests/030-drain [--redis HOST:PORT]
#include <cstdio>
#include <memory>

#include "k8s/sim.hpp"
#include "support/flags.hpp"
#include "testkit/redis.hpp"

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: k8s-sim --variant DIR [--redis HOST:PORT] [--ms-per-s N] [--lag-ms N]\n"
                       "               [--requests N] [--rate N] [--servers DIR] [--haproxy PATH]\n"
                       "  without --redis, starts its own redis-server");
  k8s::SimOptions o;
  o.variant_dir = flags.text("--variant", "05-k8s/manifests/030-drain", 4000);
  const auto redis_flag = flags.text("--redis", "own");
  if (redis_flag != "own" && redis_flag.find(':') == std::string::npos)
    support::Flags::fail("--redis", "expected HOST:PORT or own, got '" + redis_flag + "'");
  o.ms_per_s = static_cast<int>(flags.integer("--ms-per-s", 100, 10, 1000));
  o.lag_ms = static_cast<int>(flags.integer("--lag-ms", 2000, 0, 60'000));
  o.requests = static_cast<int>(flags.integer("--requests", 300, 1, 10'000));
  o.rate = static_cast<int>(flags.integer("--rate", 100, 1, 1000));
  o.roll_after = o.requests / 3;
  o.server_dir = flags.text("--servers", K8S_SERVER_DIR, 4000);
  o.haproxy = flags.text("--haproxy", K8S_HAPROXY, 4000);
  flags.done();

  std::unique_ptr<testkit::RedisServer> redis;
  try {
    if (redis_flag == "own") {
      redis = std::make_unique<testkit::RedisServer>();
      o.redis = redis->address();
    } else {
      o.redis = redis_flag;
    }
    const auto r = k8s::simulate(o);
    std::printf("%s: rolling update, %d requests at %d/s through the Service, 1 s = %d ms\n", r.variant.c_str(),
                o.requests, o.rate, o.ms_per_s);
    for (const auto& line : r.timeline) std::printf("  %s\n", line.c_str());
    std::printf("requests: %d sent, %d ok, %zu dropped\n", r.sent, r.ok, r.dropped.size());
    for (const auto& d : r.dropped) std::fprintf(stderr, "dropped: %s\n", d.c_str());
    std::printf("writes: %zu acknowledged, %zu persisted, %zu lost\n", r.acked.size(), r.persisted.size(),
                r.lost.size());
    for (const auto& id : r.lost) std::fprintf(stderr, "lost: id=%s\n", id.c_str());
    std::printf("old pod: %s after %.1f s\n", r.old_exit.c_str(), r.old_stop_s);
    const bool clean = r.dropped.empty() && r.lost.empty() && r.old_graceful;
    std::printf("verdict: %s\n", clean ? "clean rollout" : "requests dropped, work lost or pod killed");
    return clean ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
