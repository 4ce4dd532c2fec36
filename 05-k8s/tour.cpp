// 05-k8s-tour: every manifest variant through the validator and one
// simulated rolling update (kubelet + haproxy as the Service), the same
// code the tests run (k8s/rules.cpp, k8s/sim.cpp).
#include <cstdio>
#include <string>

#include "k8s/rules.hpp"
#include "k8s/sim.hpp"
#include "testkit/redis.hpp"
#include "testkit/scoreboard.hpp"

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    testkit::RedisServer redis;
    testkit::Scoreboard board("05-k8s: rolling update of one pod, 300 requests at 100/s through haproxy",
                              {"sent/ok/acked/lost", "validator", "no errors to clients", "no lost work",
                               "handles SIGTERM within grace"});
    const std::string root = CHAPTER_SOURCE_DIR;
    for (const char* name : {"010-naive", "020-prestop-equals-grace", "030-drain", "040-native-sleep"}) {
      const auto variant = k8s::load_variant(root + "/manifests/" + name);
      std::string failed;
      int nfailed = 0;
      for (const auto& r : k8s::check_variant(variant))
        if (!r.ok) failed = ++nfailed == 1 ? "fails " + r.rule : std::to_string(nfailed) + " rules fail";
      k8s::SimOptions o;
      o.variant_dir = root + "/manifests/" + name;
      o.server_dir = K8S_SERVER_DIR;
      o.haproxy = K8S_HAPROXY;
      o.redis = redis.address();
      const auto s = k8s::simulate(o);
      char stop[64];
      std::snprintf(stop, sizeof stop, "%s at %.1f s", s.old_exit.c_str(), s.old_stop_s);
      board.add_row(name, {testkit::info(std::to_string(s.sent) + "/" + std::to_string(s.ok) + "/" +
                                         std::to_string(s.acked.size()) + "/" + std::to_string(s.lost.size())),
                           testkit::verdict(failed.empty(), failed.empty() ? "all rules pass" : failed),
                           testkit::verdict(s.dropped.empty(), std::to_string(s.dropped.size()) + " dropped"),
                           testkit::verdict(s.lost.empty(), std::to_string(s.lost.size()) + " lost"),
                           testkit::verdict(s.old_graceful, stop)});
    }
    board.add_note("  1 manifest second = 100 ms; endpoint removal lags 2 s; times are manifest seconds after deletion.");
    board.add_note("  020 is SIGKILLed mid-drain (seed 001) but with fresh connections nothing is pending by then.");
    std::printf("%s", board.render().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tour failed: %s\n", e.what());
    return 1;
  }
}
