// The rolling-update simulator on each variant, for both Deployments (HTTP
// keep-alive clients, gRPC callers with one channel each): which variants
// fail requests, lose acknowledged writes, or get their pod SIGKILLed.
// Needs root (a network namespace with nftables): SKIPPED otherwise.
#include <catch2/catch.hpp>

#include <signal.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "k8s/sim.hpp"
#include "testkit/process.hpp"

using namespace std::chrono_literals;

namespace {

bool skip() {
  static const std::string why = k8s::netns_unavailable();
  if (!why.empty()) std::printf("SKIPPED: %s\n", why.c_str());
  return !why.empty();
}

k8s::SimResult rollout(const std::string& variant, const std::string& deployment, std::string dir = "") {
  k8s::SimOptions o;
  o.variant_dir = dir.empty() ? std::string(CHAPTER_SOURCE_DIR) + "/manifests/" + variant : dir;
  o.deployment = deployment;
  o.programs = {K8S_HTTP_DIR, K8S_GRPC_DIR, K8S_CALLER, K8S_HAPROXY};
  // Every manifest duration is a bound of the run: under sanitizers the
  // servers and callers are several times slower, so a manifest second
  // lasts that much longer too (TESTKIT_TIMEOUT_SCALE).
  o.ms_per_s = static_cast<int>(testkit::scaled(std::chrono::milliseconds(o.ms_per_s)).count());
  return k8s::simulate(o);
}

// What a failed check prints: the timeline, the old pod's end, the failures.
std::string describe(const k8s::SimResult& r) {
  std::string text = "timeline:\n";
  for (const auto& l : r.timeline) text += l + "\n";
  text += "old pod: " + r.old_exit + "\nfailures:\n";
  for (const auto& [why, n] : r.symptoms) text += std::to_string(n) + " x " + why + "\n";
  return text;
}

}  // namespace

TEST_CASE("sim 010-naive http: keep-alive clients fail when the pod dies by SIGTERM, acknowledged writes are lost") {
  if (skip()) return;
  auto r = rollout("010-naive", "http");
  INFO(describe(r));
  CHECK(r.old_exit == "killed by SIGTERM");
  CHECK(!r.dropped.empty());
  CHECK(!r.lost.empty());
  for (const auto& id : r.lost) CHECK((r.acked.count(id) == 1 && r.persisted.count(id) == 0));
}

TEST_CASE("sim 010-naive grpc: callers' RPCs fail UNAVAILABLE when the pod dies by SIGTERM") {
  if (skip()) return;
  auto r = rollout("010-naive", "grpc");
  INFO(describe(r));
  CHECK(r.old_exit == "killed by SIGTERM");
  REQUIRE(!r.dropped.empty());
  for (const auto& [why, n] : r.symptoms) CHECK(why.rfind("UNAVAILABLE", 0) == 0);
  CHECK(r.callers_on_old == 4);  // nothing moved them before the pod died
}

TEST_CASE("sim 020-prestop-equals-grace grpc: seed 001, SIGKILL mid-drain fails the RPCs of callers still on the old pod") {
  if (skip()) return;
  auto r = rollout("020-prestop-equals-grace", "grpc");
  INFO(describe(r));
  CHECK(r.old_sigkilled);
  // Killed 2 s (manifest time) after SIGTERM at 30 s, mid-way through the 5 s drain.
  CHECK(r.old_stop_s >= 31.5);
  // The load ran past the SIGKILL: the verdict does not depend on it having ended.
  CHECK(r.window_s > r.old_stop_s);
  REQUIRE(!r.dropped.empty());
  for (const auto& [why, n] : r.symptoms) CHECK(why.rfind("UNAVAILABLE", 0) == 0);
  CHECK(r.lost.empty());  // an OK reply means persisted: the callers see the failure
  // 020 sets no maximum connection age: 30 s of preStop moved no caller.
  CHECK(r.callers_on_old == 4);
}

TEST_CASE("sim 020-prestop-equals-grace http: SIGKILL mid-drain loses writes acknowledged on kept-alive connections") {
  if (skip()) return;
  auto r = rollout("020-prestop-equals-grace", "http");
  INFO(describe(r));
  CHECK(r.old_sigkilled);
  CHECK(r.window_s > r.old_stop_s);
  CHECK(!r.lost.empty());
  for (const auto& id : r.lost) CHECK((r.acked.count(id) == 1 && r.persisted.count(id) == 0));
}

namespace {
void clean_http(const std::string& variant) {
  auto r = rollout(variant, "http");
  INFO(describe(r));
  CHECK(r.sent > 0);
  CHECK(r.dropped.empty());
  CHECK(r.lost.empty());
  CHECK(r.old_graceful);
  CHECK(r.old_stop_s < 25);
  CHECK(r.window_s > r.old_stop_s);
}
// Nothing failed: a maximum connection age shorter than the drain moved
// every caller to the new pod before the old one stopped serving, so no
// call meets its Shutdown() (the old tolerance of one CANCELLED per caller,
// for a call crossing that GOAWAY, is gone with it).
void clean_grpc(const std::string& variant) {
  auto r = rollout(variant, "grpc");
  INFO(describe(r));
  CHECK(r.sent > 0);
  CHECK(r.callers_on_old == 0);
  CHECK(r.dropped.empty());
  CHECK(r.lost.empty());
  CHECK(r.old_graceful);
  CHECK(r.old_stop_s < 25);
  CHECK(r.window_s > r.old_stop_s);
}
}  // namespace

TEST_CASE("sim 030-drain http: Connection: close moves keep-alive clients, nothing failed or lost, exit 0 within grace") {
  if (!skip()) clean_http("030-drain");
}
// 030 drains, but nothing tells a caller that keeps one connection to
// leave: every caller is still on the old pod when Shutdown() sends its
// GOAWAY. A call that crosses that GOAWAY comes back CANCELLED from gRPC
// C++ 1.51 (grpc/grpc#41785), and one still queued for a server thread when
// the last call is answered is refused unstarted (chapter 03's 050): one
// stop in several, so the count is not asserted; who is still connected is.
TEST_CASE("sim 030-drain grpc: nothing refused, but every caller is still on the old pod when its drain ends") {
  if (skip()) return;
  auto r = rollout("030-drain", "grpc");
  INFO(describe(r));
  CHECK(r.callers_on_old == 4);
  CHECK(r.old_graceful);
  CHECK(r.lost.empty());
  for (const auto& [why, n] : r.symptoms)
    CHECK((why == "CANCELLED: CANCELLED" || why == "UNAVAILABLE: server stopping: call not started"));
}
TEST_CASE("sim 035-connection-age http: as 030, nothing failed or lost, exit 0 within grace") {
  if (!skip()) clean_http("035-connection-age");
}
TEST_CASE("sim 035-connection-age grpc: the connection age moves every caller to the new pod before the drain ends, no RPC failed, exit 0 within grace") {
  if (!skip()) clean_grpc("035-connection-age");
}
TEST_CASE("sim 040-native-sleep http: nothing failed or lost, exit 0 within grace") {
  if (!skip()) clean_http("040-native-sleep");
}
TEST_CASE("sim 040-native-sleep grpc: every caller moved before the drain ends, no RPC failed, exit 0 within grace") {
  if (!skip()) clean_grpc("040-native-sleep");
}

namespace {

namespace fs = std::filesystem;

// The namespaces a simulator process made (named gs-k8s-PID-N), with the
// processes living in each.
std::map<std::string, std::vector<pid_t>> namespaces_of(pid_t sim) {
  std::map<std::string, std::vector<pid_t>> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/run/netns", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("gs-k8s-" + std::to_string(sim) + "-", 0) != 0) continue;
    auto listed = testkit::run_to_exit({"ip", "netns", "pids", name});
    std::istringstream in(listed.out);
    auto& pids = found[name];
    for (pid_t pid; in >> pid;) pids.push_back(pid);
  }
  return found;
}

bool gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");  // a zombie is gone too
  std::string text((std::istreambuf_iterator<char>(stat)), {});
  const auto paren = text.rfind(')');
  return paren != std::string::npos && text.compare(paren + 2, 1, "Z") == 0;
}

std::string comm(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

// Waits (bounded) until the simulator has its namespace with a pod or Redis
// running in it (not only the `ip` and `nft` runs that set a namespace up).
std::map<std::string, std::vector<pid_t>> wait_for_pods(testkit::Process& sim) {
  const auto until = testkit::Clock::now() + testkit::scaled(20s);
  while (testkit::Clock::now() < until) {
    auto found = namespaces_of(sim.pid());
    for (const auto& [name, pids] : found)
      for (pid_t pid : pids)
        if (const auto c = comm(pid); c == "redis-server" || c.rfind("050-", 0) == 0) return found;
    REQUIRE(sim.running());
    std::this_thread::sleep_for(20ms);  // polling for the namespace, not a pause standing in for it
  }
  FAIL("the simulator never started its pods:\n" << sim.transcript());
  return {};
}

}  // namespace

TEST_CASE("k8s-sim: SIGTERM stops every pod and deletes the namespace, and the next run cleans up after a SIGKILLed one") {
  if (skip()) return;
  const std::vector<std::string> argv{K8S_SIM, "--variant", std::string(CHAPTER_SOURCE_DIR) + "/manifests/030-drain",
                                      "--deployment", "http"};
  // A simulator SIGKILLed mid-run cannot clean up: its namespace and the
  // processes in it stay behind.
  testkit::Process killed(argv);
  const auto left = wait_for_pods(killed);
  killed.kill();
  for (const auto& [name, pids] : left) {
    INFO(name);
    REQUIRE(fs::exists("/run/netns/" + name));  // precondition: left behind
  }

  // The next run removes them before it starts its own pods.
  testkit::Process next(argv);
  const auto own = wait_for_pods(next);
  for (const auto& [name, pids] : left) {
    INFO(name);
    CHECK_FALSE(fs::exists("/run/netns/" + name));
    for (pid_t pid : pids) CHECK(gone(pid));
  }

  // SIGTERM: the simulator stops its pods and deletes its namespace itself.
  next.send_signal(SIGTERM);
  const auto status = next.expect_exit(testkit::scaled(20s));
  INFO(next.transcript());
  CHECK(status.exited);
  CHECK(status.code == 1);
  CHECK_THAT(next.err(), Catch::Contains("SIGTERM, stopping the pods and deleting the namespace"));
  CHECK(namespaces_of(next.pid()).empty());
  for (const auto& [name, pids] : own)
    for (pid_t pid : pids) {
      INFO(name << " pid " << pid);
      CHECK(gone(pid));
    }
}
