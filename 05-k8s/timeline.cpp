// 05-k8s timelines: one simulated rolling update of the HTTP Deployment per
// manifest variant (k8s/sim.hpp: a kubelet, an nftables Service, endpoint
// changes 2 s late), drawn on one axis from the deletion of the old pod:
// every request of the long-lived clients coloured by its outcome (Redis is
// the judge of acknowledged writes), and the kubelet's and kube-proxy's
// events: deletion, endpoint removal, preStop, SIGTERM, SIGKILL, exit.
// Needs root for the network namespace; exits 77 (skipped) without it.
#include <cstdio>
#include <string>

#include "k8s/sim.hpp"
#include "testkit/timeline.hpp"
#include "testkit/tour.hpp"

using namespace testkit;

namespace {

struct Mark {
  const char* needle;
  const char* label;  // nullptr: the line's own text after the needle
};
const Mark kMarks[] = {{"old pod deleted", "deleted"},
                       {"old pod terminating in the EndpointSlice", "endpoint removed"},
                       {"preStop ", nullptr},
                       {"SIGTERM, SIGKILL in", "SIGTERM"},
                       {"grace period over: SIGKILL", "SIGKILL"},
                       {"old pod gone: ", nullptr}};

TimelineLane lane_of(const std::string& name, const k8s::SimResult& r) {
  TimelineLane lane{name, {}, {}};
  double zero = 0;
  for (const auto& line : r.timeline)  // "t= 13.6s what"
    if (line.find("old pod deleted") != std::string::npos) zero = std::stod(line.substr(2));
  for (const auto& line : r.timeline) {
    const double at = std::stod(line.substr(2)) - zero;
    const std::string what = line.substr(line.find("s ") + 2);
    for (const auto& m : kMarks)
      if (what.rfind(m.needle, 0) == 0) {
        std::string label = m.label ? m.label : what.substr(std::string(m.needle).size());
        if (!m.label && what.rfind("preStop", 0) == 0) label = "preStop " + label;
        lane.events.push_back({at, label});
        break;
      }
  }
  for (const auto& q : r.requests) {
    if (q.start_s - zero < -2) continue;  // the steady state before the deletion
    Outcome o = q.error.empty()                      ? (r.lost.count(q.id) ? Outcome::lost : Outcome::answered)
                : q.error.rfind("HTTP ", 0) == 0     ? Outcome::rejected
                : q.error.find("Could not establish") != std::string::npos ? Outcome::refused
                                                                         : Outcome::failed;
    lane.requests.push_back({q.start_s - zero, q.end_s - zero, o});
  }
  return lane;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = timeline_out_dir(argc, argv);
  if (const auto why = k8s::netns_unavailable(); !why.empty()) {
    std::printf("SKIPPED: %s\n", why.c_str());
    return 77;
  }
  TourRuntime tour("05-k8s timelines");
  on_stop([] { k8s::abort_simulations(); });
  Timeline t;
  t.title = "Rolling update of the HTTP Deployment, 4 keep-alive clients through the Service";
  t.x_label = "manifest seconds after the old pod's deletion (a bar: one POST /incr)";
  for (const char* name : {"010-naive", "020-prestop-equals-grace", "030-drain", "040-native-sleep"}) {
    tour.stage(name);
    tour.scenario("rolling update, HTTP keep-alive clients");
    k8s::SimOptions o;
    o.variant_dir = std::string(CHAPTER_SOURCE_DIR) + "/manifests/" + name;
    o.programs = {K8S_HTTP_DIR, K8S_GRPC_DIR, K8S_CALLER, K8S_HAPROXY};
    o.deployment = "http";
    t.lanes.push_back(lane_of(name, k8s::simulate(o)));
  }
  tour.clear();
  render_timeline(t, dir + "/rolling-update.svg");
  std::printf("%s/rolling-update.svg\n", dir.c_str());
}
