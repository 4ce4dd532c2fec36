// 05-k8s-tour: every manifest variant through the validator and one
// simulated rolling update per Deployment (kubelet, nftables Service in a
// network namespace, haproxy ingress), the same code the tests run
// (k8s/rules.cpp, k8s/sim.cpp).
#include <cstdio>
#include <map>
#include <string>

#include "k8s/rules.hpp"
#include "k8s/sim.hpp"
#include "testkit/scoreboard.hpp"
#include "testkit/tour.hpp"

int main() {
  // Progress on a terminal; Ctrl-C/SIGTERM end every process and then the
  // simulation's network namespace.
  testkit::TourRuntime tour("05-k8s");
  testkit::on_stop([] { k8s::abort_simulations(); });
  if (const auto why = k8s::netns_unavailable(); !why.empty()) {
    std::printf("05-k8s: SKIPPED: %s\n", why.c_str());
    return 0;
  }
  try {
    testkit::Scoreboard board("05-k8s: rolling update of one pod per Deployment, long-lived clients through the Service",
                              {"validator", "gRPC callers: failed, left", "HTTP keep-alive: failed, lost",
                               "old pods stop within grace"});
    const std::string root = CHAPTER_SOURCE_DIR;
    std::string seed_symptoms;
    for (const char* name : {"010-naive", "020-prestop-equals-grace", "030-drain", "035-connection-age", "040-native-sleep"}) {
      const auto variant = k8s::load_variant(root + "/manifests/" + name);
      std::string failed;
      int nfailed = 0;
      for (const auto& r : k8s::check_variant(variant))
        if (!r.ok) failed = ++nfailed == 1 ? "fails " + r.rule : std::to_string(nfailed) + " rules fail";
      tour.stage(name);
      tour.scenario("rolling update, gRPC callers");
      k8s::SimOptions o;
      o.variant_dir = root + "/manifests/" + name;
      o.programs = {K8S_HTTP_DIR, K8S_GRPC_DIR, K8S_CALLER, K8S_HAPROXY};
      o.deployment = "grpc";
      const auto g = k8s::simulate(o);
      o.deployment = "http";
      tour.scenario("rolling update, HTTP keep-alive clients");
      const auto h = k8s::simulate(o);
      if (std::string(name) == "020-prestop-equals-grace") {
        bool unavailable = true;
        for (const auto& [why, n] : g.symptoms) unavailable = unavailable && why.rfind("UNAVAILABLE", 0) == 0;
        seed_symptoms = std::string(unavailable ? "all" : "not all") + " UNAVAILABLE, " + k8s::failure_summary(g);
      }
      auto stop = [](const k8s::SimResult& s) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%s at %.1f s", s.old_exit == "exit 0" ? "exit 0" :
                      s.old_sigkilled ? "SIGKILL" : s.old_exit.c_str(), s.old_stop_s);
        return std::string(buf);
      };
      board.add_row(name, {testkit::verdict(failed.empty(), failed.empty() ? "all rules pass" : failed),
                           testkit::verdict(g.dropped.empty() && g.callers_on_old == 0,
                                            std::to_string(g.dropped.size()) + "/" + std::to_string(g.sent) + ", " +
                                                std::to_string(g.callers_on_old) + "/" + std::to_string(o.clients) +
                                                " left"),
                           testkit::verdict(h.dropped.empty() && h.lost.empty(),
                                            std::to_string(h.dropped.size()) + "/" + std::to_string(h.sent) + ", " +
                                                std::to_string(h.lost.size()) + " lost"),
                           testkit::verdict(g.old_graceful && h.old_graceful, "grpc " + stop(g) + ", http " + stop(h))});
    }
    board.add_note("  1 manifest second = 100 ms; endpoint changes reach kube-proxy 2 s late; the load runs until");
    board.add_note("  grace + 5 s after the deletion; times are manifest seconds after the deletion.");
    board.add_note("  020 gRPC failures (seed 001): " + seed_symptoms);
    board.add_note("  left: callers still connected to the old pod when it stopped serving (its GOAWAY, or its death);");
    board.add_note("  a call of theirs that crosses the server's shutdown GOAWAY can fail CANCELLED (gRPC C++ 1.51).");
    tour.clear();
    std::printf("%s", board.render().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tour failed: %s\n", e.what());
    return 1;
  }
}
