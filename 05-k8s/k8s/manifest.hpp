// manifest.hpp - the chapter's model of the Kubernetes fields it uses, read
// from a variant directory (every *.yaml in it, multi-document), shared by
// the validator (k8s-validate) and the rollout simulator (k8s-sim).
//
// Not the official OpenAPI schema: a hand-written model of the fields these
// manifests use. Within the parts it models, unknown fields are rejected
// (a typo such as "terminationGracePeriodSecond" would otherwise be silently
// ignored by a lenient reader and the default 30 s would apply).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace k8s {

struct Probe {
  std::string kind;  // "httpGet", "grpc", "tcpSocket", "exec"
  std::string path;  // httpGet only
  int port = 0;      // httpGet and grpc, when numeric
  int period_s = 10;
  int initial_delay_s = 0;
};

struct PreStop {
  std::string kind;  // "", "exec", "sleep"
  int seconds = 0;   // exec: parsed from `sleep N`; sleep: seconds
  std::vector<std::string> command;
};

struct Container {
  std::string name, image;
  std::vector<std::string> command, args;
  std::optional<Probe> readiness;
  PreStop pre_stop;
  std::optional<bool> allow_privilege_escalation, read_only_root_fs, run_as_non_root;
  std::optional<long long> run_as_user;
  bool has_requests = false, has_limits = false;
  // The server binary: the first element of command/args naming a file
  // under /usr/local/bin/ ("" if none).
  std::string binary() const;
};

struct Deployment {
  std::string name;
  int replicas = 1;
  std::map<std::string, std::string> selector, pod_labels;
  std::optional<std::string> max_unavailable, max_surge;  // as written (int or "25%")
  std::optional<int> grace_s;                             // terminationGracePeriodSeconds
  int min_ready_s = 0;                                    // minReadySeconds
  std::optional<bool> pod_run_as_non_root;
  std::optional<long long> pod_run_as_user;
  std::vector<Container> containers;
};

struct Pdb {
  std::string name;
  std::map<std::string, std::string> selector;
  bool has_budget = false;  // minAvailable or maxUnavailable set
  std::optional<std::string> min_available, max_unavailable;  // as written
};

struct Service {
  std::string name;
  std::map<std::string, std::string> selector;
  int port = 0;         // the first port
  std::string target;   // its targetPort as written (default: port)
};

struct Variant {
  std::string name;  // the directory name, e.g. "030-drain"
  std::vector<std::string> kinds;      // every document's kind, in order
  std::vector<std::string> structure;  // structural errors (empty: fine)
  std::vector<Deployment> deployments;
  std::vector<Pdb> pdbs;
  int services = 0;
  std::vector<Service> service_defs;
};

// Reads DIR/*.yaml (sorted). Never throws for content: problems go to
// Variant::structure. Throws std::runtime_error if DIR holds no YAML.
Variant load_variant(const std::string& dir);

// Value of `--flag V` or `--flag=V` in args.
std::optional<std::string> arg_value(const std::vector<std::string>& args, const std::string& flag);

}  // namespace k8s
