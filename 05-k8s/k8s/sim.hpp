// sim.hpp - a rolling update of one pod to another, played in a network
// namespace the simulator creates (and always deletes).
//
// The Service, as kube-proxy does it: a ClusterIP (10.96.0.10) and the pod
// addresses (10.244.0.11 old, 10.244.0.12 new) on the namespace's loopback,
// and an nftables nat rule per Service that rewrites the destination (DNAT)
// to the endpoints kube-proxy would pick: the ready ones, or, when none is
// ready, the terminating ones that still serve (EndpointSlice conditions,
// Kubernetes 1.26+). Endpoint changes are applied `lag_ms` late by
// rewriting the rule. Nothing proxies: established connections keep their
// pod through conntrack, and a reset from the pod reaches the client.
// The ingress (HTTP only): haproxy health-checking the pods' /readyz.
// The kubelet: starts the new pod (the Deployment's server with the
// manifest's args; --listen gets the pod address), probes its
// readinessProbe, waits minReadySeconds (Available), then deletes the old
// pod: preStop, the stop signal, SIGKILL when the grace period (counted from
// the start of the kill, preStop included) is over, at least 2 s after the
// signal.
// The load: long-lived clients. HTTP: keep-alive connections through the
// Service and through the ingress, POST /incr?id=...; gRPC: callers that
// keep one channel each (k8s-grpc-caller). The load runs from before the
// deletion until grace + margin after it: the verdict never depends on
// the load having ended. Acknowledged ids are then looked up in Redis.
//
// Time is scaled: one manifest second lasts `ms_per_s` real milliseconds,
// for the preStop, the grace, the probe period, minReadySeconds, the lag,
// haproxy's timeouts and checks, and every --*-ms flag of the server.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

namespace k8s {

// Where the pods' programs are. The server binaries named by the manifests
// (image + /usr/local/bin/NAME) map to build paths in one table in sim.cpp.
struct SimPrograms {
  std::string http_dir;  // chapter 02's build directory
  std::string grpc_dir;  // chapter 03's build directory
  std::string caller;    // k8s-grpc-caller
  std::string haproxy = "/usr/sbin/haproxy";
};

struct SimOptions {
  std::string variant_dir;          // e.g. .../manifests/030-drain
  std::string deployment = "http";  // which Deployment of the variant to roll
  SimPrograms programs;
  int ms_per_s = 100;   // real milliseconds per manifest second
  int lag_ms = 2000;    // endpoint propagation, manifest milliseconds
  int clients = 4;      // long-lived connections through the Service
  int margin_s = 5;     // the load runs until grace + margin after deletion
};

struct SimResult {
  std::string variant, deployment, protocol;  // protocol: "http" or "grpc"
  int sent = 0, ok = 0;
  std::vector<std::string> dropped;     // "s1-42: Connection reset by peer", ...
  std::map<std::string, int> symptoms;  // error text -> count
  std::set<std::string> acked, persisted, lost;
  std::string old_exit;       // "exit 0", "killed by SIGKILL", ...
  bool old_graceful = false;  // exited 0 by itself
  bool old_sigkilled = false;
  double old_stop_s = 0;      // deletion -> exit, in manifest seconds
  double window_s = 0;        // the load ran until this long after deletion
  // gRPC: the callers whose connection still led to the old pod when it
  // stopped serving (its GOAWAY, or its death if that came first); their
  // calls are the ones a stop can fail. -1 for HTTP.
  int callers_on_old = -1;
  std::vector<std::string> timeline;  // "t= 13.6s old pod deleted", ...
  // The trace, for timelines: every request of the long-lived HTTP clients,
  // or every call of the gRPC callers, in manifest seconds since the start
  // like the timeline above; error "" means acknowledged.
  struct Request {
    double start_s = 0, end_s = 0;
    std::string id, error;
    std::string pod;  // gRPC, answered: "old" or "new", the pod that answered
  };
  std::vector<Request> requests;
};

// The failures by kind, always the same six counts in the same order
// ("reset by peer 3, socket closed 1, refused 0, ..."): gRPC messages and
// httplib errors sorted into what a caller would see.
std::string failure_summary(const SimResult& r);

// "" if this machine can create network namespaces and nftables rules;
// otherwise why not (for "SKIPPED: ...").
std::string netns_unavailable();

// Throws std::runtime_error if the simulation itself cannot run (haproxy,
// a server, Redis or the namespace missing); stage misbehaviour is the
// result, not an error. The namespace and every process are gone on return.
SimResult simulate(const SimOptions& options);

// For a program's SIGINT/SIGTERM: kills every process a running simulation
// started and deletes its namespace. Not async-signal-safe: call it from a
// signal thread.
void abort_simulations();

}  // namespace k8s
