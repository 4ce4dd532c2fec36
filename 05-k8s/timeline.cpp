// 05-k8s timelines: one simulated rolling update per manifest variant
// (k8s/sim.hpp: a kubelet, an nftables Service, endpoint changes 2 s late),
// of the HTTP Deployment (rolling-update.svg) and of the gRPC one
// (grpc-callers.svg), drawn on one axis from the deletion of the old pod:
// every request of the long-lived clients coloured by its outcome (Redis is
// the judge of acknowledged writes), and the kubelet's and kube-proxy's
// events: deletion, endpoint removal, preStop, SIGTERM, SIGKILL, exit; for
// gRPC also how many callers were still on the old pod when it stopped
// serving, and when the last of them moved to the new one.
// Needs root for the network namespace; exits 77 (skipped) without it.
#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
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
                       {"old pod gone: ", nullptr},
                       {"old pod stops serving", nullptr}};

// "old pod stops serving (GOAWAY): 4 of 4 callers still connected to it"
// -> "GOAWAY: 4/4 callers on it".
std::string stops_serving_label(const std::string& what) {
  const auto open = what.find('('), close = what.find(')'), of = what.find(" callers");
  if (open == std::string::npos || close == std::string::npos || of == std::string::npos) return what;
  std::string n = what.substr(close + 3, of - close - 3);  // "4 of 4"
  if (const auto sp = n.find(" of "); sp != std::string::npos) n.replace(sp, 4, "/");
  return what.substr(open + 1, close - open - 1) + ": " + n + " callers on it";
}

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
        if (!m.label && what.rfind("old pod stops serving", 0) == 0) label = stops_serving_label(what);
        lane.events.push_back({at, label});
        break;
      }
  }
  // A pod that died before its drain ended stopped serving as it died: one
  // label, "killed by SIGTERM: 4/4 callers on it", not two on one line.
  for (auto it = lane.events.begin(); it != lane.events.end(); ++it)
    if (it->label.rfind("gone: ", 0) == 0) {
      const std::string callers = it->label.substr(6);
      lane.events.erase(it);
      for (auto& e : lane.events)
        if (e.label.rfind("killed by", 0) == 0 || e.label.rfind("exit ", 0) == 0) e.label += ": " + callers;
      break;
    }
  // gRPC: the moment the last caller to leave the old pod had its first
  // answer from the new one after its last answer from the old one (a
  // caller changes pod only when its connection ends, and before the
  // endpoint removal a new connection may land on either pod).
  std::map<std::string, double> last_old, moved;  // caller -> end of that answer
  for (const auto& q : r.requests)
    if (q.pod == "old") last_old[q.id.substr(0, q.id.find('-'))] = q.end_s;
  std::set<std::string> callers;
  for (const auto& q : r.requests) {
    if (q.pod.empty()) continue;
    const std::string caller = q.id.substr(0, q.id.find('-'));
    callers.insert(caller);
    const bool after_old = !last_old.count(caller) || q.end_s > last_old[caller];
    if (q.pod == "new" && after_old && !moved.count(caller)) moved[caller] = q.end_s - zero;
  }
  if (!callers.empty() && moved.size() == callers.size()) {
    double last = moved.begin()->second;
    for (const auto& [caller, at] : moved) last = std::max(last, at);
    lane.events.push_back({last, "all callers on the new pod"});
  }
  for (const auto& q : r.requests) {
    if (q.start_s - zero < -2) continue;  // the steady state before the deletion
    Outcome o = q.error.empty()                      ? (r.lost.count(q.id) ? Outcome::lost : Outcome::answered)
                : q.error.rfind("HTTP ", 0) == 0     ? Outcome::rejected
                : q.error.find("call not started") != std::string::npos ? Outcome::rejected  // gRPC, refused in order
                : q.error.find("Could not establish") != std::string::npos ? Outcome::refused
                                                                         : Outcome::failed;
    lane.requests.push_back({q.start_s - zero, q.end_s - zero, o});
  }
  return lane;
}

// One rolling update per variant of `deployment`, one lane each.
Timeline rolling_updates(TourRuntime& tour, const std::string& deployment, const char* clients) {
  Timeline t;
  for (const char* name :
       {"010-naive", "020-prestop-equals-grace", "030-drain", "035-connection-age", "040-native-sleep"}) {
    tour.stage(name);
    tour.scenario("rolling update, " + deployment + " " + clients);
    k8s::SimOptions o;
    o.variant_dir = std::string(CHAPTER_SOURCE_DIR) + "/manifests/" + name;
    o.programs = {K8S_HTTP_DIR, K8S_GRPC_DIR, K8S_CALLER, K8S_HAPROXY};
    o.deployment = deployment;
    t.lanes.push_back(lane_of(name, k8s::simulate(o)));
  }
  return t;
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
  Timeline http = rolling_updates(tour, "http", "keep-alive clients");
  http.title = "Rolling update of the HTTP Deployment, 4 keep-alive clients through the Service";
  http.x_label = "manifest seconds after the old pod's deletion (a bar: one POST /incr)";
  Timeline grpc = rolling_updates(tour, "grpc", "long-lived callers");
  grpc.title = "Rolling update of the gRPC Deployment, 4 callers through the Service, one channel each";
  grpc.x_label = "manifest seconds after the old pod's deletion (a bar: one Work call)";
  tour.clear();
  render_timeline(http, dir + "/rolling-update.svg");
  std::printf("%s/rolling-update.svg\n", dir.c_str());
  render_timeline(grpc, dir + "/grpc-callers.svg");
  std::printf("%s/grpc-callers.svg\n", dir.c_str());
}
