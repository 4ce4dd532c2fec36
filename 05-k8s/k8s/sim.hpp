// sim.hpp - a rolling update of one pod to another, played on loopback.
//
// The kubelet: starts the new pod (chapter 02 server with the manifest's
// args), waits for its readinessProbe (or none: Ready at once), then deletes
// the old pod: preStop (its sleep), SIGTERM, SIGKILL when the grace period
// is over (at least 2 s after SIGTERM, as the kubelet does).
// The Service: haproxy in TCP mode, driven over its runtime API, whose
// endpoint changes lag by a fixed delay like kube-proxy's; no retries, no
// health checks of its own, established connections untouched.
// The load: N requests /incr?id=rNNN at a fixed rate, fresh connection
// each, through haproxy; ids acknowledged are then looked up in Redis.
//
// Time is scaled: one manifest second lasts `ms_per_s` real milliseconds,
// for the preStop sleep, the grace period, the probe period, the lag, and
// every --*-ms flag of the server.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace k8s {

struct SimOptions {
  std::string variant_dir;  // e.g. .../manifests/030-drain
  std::string server_dir;   // where chapter 02's binaries are
  std::string haproxy = "/usr/sbin/haproxy";
  std::string redis;        // HOST:PORT of a running redis-server
  int ms_per_s = 100;       // real milliseconds per manifest second
  int lag_ms = 2000;        // endpoint propagation, manifest milliseconds
  int requests = 300;
  int rate = 100;           // requests per real second
  int roll_after = 100;     // start the rollout after this many requests
};

struct SimResult {
  std::string variant;
  int sent = 0, ok = 0;
  std::vector<std::string> dropped;  // "r042: connection closed by the Service", ...
  std::set<std::string> acked, persisted, lost;
  std::string old_exit;       // "exit 0", "killed by SIGKILL", ...
  bool old_graceful = false;  // exited 0 by itself
  bool old_sigkilled = false;
  double old_stop_s = 0;      // deletion -> exit, in manifest seconds
  std::vector<std::string> timeline;  // "t=+0.0s old pod deleted, preStop sleep 5 s", ...
};

// Throws std::runtime_error if the simulation itself cannot run (haproxy,
// a server or Redis missing); stage misbehaviour is the result, not an error.
SimResult simulate(const SimOptions& options);

}  // namespace k8s
