// k8s-sim: one rolling update of one Deployment of a manifest variant, in a
// network namespace of its own (see k8s/sim.hpp; needs root). Prints the
// timeline and the outcome; exit 0 when no request failed, no acknowledged
// write was lost and the old pod stopped by itself; 1 otherwise; 2 on bad
// flags. SIGINT/SIGTERM stop every process it started and delete the
// namespace (exit 1); a second signal exits at once.
//
//   k8s-sim --variant 05-k8s/manifests/030-drain [--deployment grpc]
//   --trace adds one line per HTTP request or gRPC call (start, end in
//   manifest seconds, id, outcome): the trace 05-k8s/timeline.cpp draws.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "k8s/sim.hpp"
#include "support/flags.hpp"

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Before any thread (the namespace check below starts some): the signals
  // wait for the signal thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  support::Flags flags(argc, argv,
                       "usage: k8s-sim --variant DIR [--deployment http|grpc] [--ms-per-s N] [--lag-ms N]\n"
                       "               [--clients N] [--servers DIR] [--grpc-servers DIR] [--haproxy PATH] [--verbose]\n"
                       "               [--trace]");
  k8s::SimOptions o;
  o.variant_dir = flags.text("--variant", "05-k8s/manifests/030-drain", 4000);
  o.deployment = flags.text("--deployment", "http", 253);
  o.ms_per_s = static_cast<int>(flags.integer("--ms-per-s", 100, 10, 1000));
  o.lag_ms = static_cast<int>(flags.integer("--lag-ms", 2000, 0, 60'000));
  o.clients = static_cast<int>(flags.integer("--clients", 4, 1, 64));
  o.programs.http_dir = flags.text("--servers", K8S_HTTP_DIR, 4000);
  o.programs.grpc_dir = flags.text("--grpc-servers", K8S_GRPC_DIR, 4000);
  o.programs.caller = K8S_CALLER;
  o.programs.haproxy = flags.text("--haproxy", K8S_HAPROXY, 4000);
  const bool verbose = flags.present("--verbose");  // every failed and lost id, on stderr
  const bool trace = flags.present("--trace");      // every request or call with its times, for timelines
  flags.done();
  if (const auto why = k8s::netns_unavailable(); !why.empty()) {
    std::fprintf(stderr, "error: %s\n", why.c_str());
    return 1;
  }

  std::thread([set] {
    int sig = 0;
    sigwait(&set, &sig);
    std::thread([set] {  // a second signal: no more waiting
      int again = 0;
      sigwait(&set, &again);
      std::_Exit(1);
    }).detach();
    std::fprintf(stderr, "k8s-sim: SIG%s, stopping the pods and deleting the namespace\n", sigabbrev_np(sig));
    k8s::abort_simulations();
    std::_Exit(1);
  }).detach();

  try {
    const auto r = k8s::simulate(o);
    std::printf("%s/%s: rolling update, %d long-lived %s clients through the Service, 1 s = %d ms\n",
                r.variant.c_str(), r.deployment.c_str(), o.clients, r.protocol.c_str(), o.ms_per_s);
    for (const auto& line : r.timeline) std::printf("  %s\n", line.c_str());
    std::printf("requests: %d sent, %d ok, %zu failed (load until %.0f s after the deletion)\n", r.sent, r.ok,
                r.dropped.size(), r.window_s);
    std::printf("failures: %s\n", k8s::failure_summary(r).c_str());
    if (verbose) {
      for (const auto& [why, n] : r.symptoms) std::fprintf(stderr, "%d x %s\n", n, why.c_str());
      for (const auto& d : r.dropped) std::fprintf(stderr, "failed: %s\n", d.c_str());
    }
    std::printf("writes: %zu acknowledged, %zu persisted, %zu lost\n", r.acked.size(), r.persisted.size(),
                r.lost.size());
    if (verbose)
      for (const auto& id : r.lost) std::fprintf(stderr, "lost: id=%s\n", id.c_str());
    if (trace)
      for (const auto& q : r.requests)
        std::printf("trace: t=%.2fs..%.2fs id=%s %s\n", q.start_s, q.end_s, q.id.c_str(),
                    !q.error.empty() ? q.error.c_str() : r.lost.count(q.id) ? "lost" : "ok");
    std::printf("old pod: %s after %.1f s\n", r.old_exit.c_str(), r.old_stop_s);
    const bool clean = r.dropped.empty() && r.lost.empty() && r.old_graceful;
    std::printf("verdict: %s\n", clean ? "clean rollout" : "requests failed, work lost or pod killed");
    return clean ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
