// tour-stop-check TOUR TERM|INT [WHEN] - proves that a chapter's tour stops like the
// programs it teaches: signalled in the middle of a scenario, it ends every
// process it started and exits within a second with 128 + the signal.
//
// WHEN is a piece of the tour's progress line (TOUR_PROGRESS=lines) to wait
// for before signalling, e.g. "030-track-background-work: a handler that
// never returns"; without it the signal lands in the first stage's first
// scenario.
//
// Every process the tour starts (stages, redis-server, haproxy, clients)
// inherits a marker in its environment, and this program adopts the orphans
// the tour leaves (PR_SET_CHILD_SUBREAPER); after the tour exits, no live
// process may carry the marker or be such an orphan. Exit 0 when the tour
// passes, 1 with the reason when it does not, 2 on bad arguments.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "testkit/process.hpp"

using namespace testkit;
using namespace std::chrono_literals;

namespace {

int fail(const std::string& why, const Process& tour) {
  std::fprintf(stderr, "FAILED: %s\n%s\n", why.c_str(), tour.transcript().c_str());
  return 1;
}

}  // namespace

int check(int argc, char** argv);

int main(int argc, char** argv) {
  if ((argc != 3 && argc != 4) || (std::string(argv[2]) != "TERM" && std::string(argv[2]) != "INT")) {
    std::fprintf(stderr, "usage: tour-stop-check TOUR TERM|INT [WHEN]\n");
    return 2;
  }
  try {
    return check(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAILED: %s\n", e.what());
    return 1;
  }
}

int check(int argc, char** argv) {
  const int sig = std::string(argv[2]) == "TERM" ? SIGTERM : SIGINT;
  const std::string marker = "GS_TOUR_STOP_CHECK=" + std::to_string(std::random_device{}());

  // What the tour leaves running is re-parented here once it is gone, and
  // found even if it hid the marker (redis-server overwrites its
  // environment with its process title).
  adopt_orphans();
  Process tour({argv[1]}, {.extra_env = {marker, "TOUR_PROGRESS=lines"}, .cwd = {}});
  // Mid-scenario: the tour has processes running (a stage, a redis-server)
  // when the signal lands.
  if (!tour.wait_for_line("tour: ", 120s) || !tour.wait_for_line(argc == 4 ? argv[3] : "tour: ", 240s)) {
    // A tour that cannot run here says so (05-k8s without network namespaces).
    if (tour.wait_exit(scaled(5s)) && tour.out().find("SKIPPED:") != std::string::npos) {
      std::printf("SKIPPED: the tour skipped its scenarios here\n");
      return 0;
    }
    return fail(std::string("the tour never reached '") + (argc == 4 ? argv[3] : "tour: ") + "'", tour);
  }
  std::vector<std::string> before;
  for (auto deadline = Clock::now() + scaled(30s); before.empty() && Clock::now() < deadline;
       std::this_thread::sleep_for(5ms))
    for (auto& p : processes_with_env(marker))
      if (p.substr(0, p.find(' ')) != std::to_string(tour.pid())) before.push_back(p);
  if (before.empty()) return fail("precondition: the tour had no process running mid-scenario", tour);

  const auto sent = tour.send_signal(sig);
  const auto status = tour.wait_exit(scaled(1000ms));
  if (!status) return fail("still running 1 s after " + signal_name(sig), tour);
  const auto took = std::chrono::duration_cast<milliseconds>(tour.exit_time() - sent).count();
  if (!status->exited || status->code != 128 + sig)
    return fail(status->str() + " after " + signal_name(sig) + ", expected exit " + std::to_string(128 + sig), tour);

  // Killed processes disappear once their parent (or this program, for the
  // orphans it adopted) reaps them.
  const auto still_running = [&] {
    std::vector<std::string> all = processes_with_env(marker);
    for (auto& p : adopted_children())
      if (std::find(all.begin(), all.end(), p) == all.end()) all.push_back(p);
    return all;
  };
  std::vector<std::string> left = still_running();
  for (auto deadline = Clock::now() + scaled(2s); !left.empty() && Clock::now() < deadline;
       std::this_thread::sleep_for(10ms))
    left = still_running();
  if (!left.empty()) {
    std::string list;
    for (auto& p : left) list += "\n  " + p;
    return fail("processes left behind:" + list, tour);
  }
  std::printf("ok: %s exited %d in %lld ms after %s; %zu processes were running, none left\n", argv[1],
              status->code, static_cast<long long>(took), signal_name(sig).c_str(), before.size());
  return 0;
}
