// rules.hpp - the project's checks on a variant and on the Dockerfile.
#pragma once

#include <string>
#include <vector>

#include "manifest.hpp"

namespace k8s {

struct RuleResult {
  std::string rule;    // "structure", "grace-budget", ...
  bool ok = false;
  std::string detail;  // what was found
};

// Seconds kept in hand beyond preStop + shutdown deadline: the kubelet's
// SIGTERM delivery, tini, process exit, and a slow Redis at the end.
constexpr int kMarginSeconds = 5;
// A preStop sleep shorter than this does not cover endpoint propagation
// (seed 000: 5-10 s).
constexpr int kMinPreStopSeconds = 5;
// The new pod must stay Ready this long before the old one is deleted, so
// that its endpoint has reached kube-proxy (the same 5 s as above).
constexpr int kMinReadySeconds = 5;

// Every rule, in a fixed order, for the app Deployment(s) of a variant.
std::vector<RuleResult> check_variant(const Variant& v);
// The official Kubernetes OpenAPI schema (kubernetes-models, run by node):
// CHAPTER_DIR/schema/check.mjs on VARIANT_DIR. Fails if node or the npm
// packages are missing (scripts/install-deps runs npm ci there).
RuleResult check_schema(const std::string& chapter_dir, const std::string& variant_dir);
// Exec-form ENTRYPOINT through tini, non-root USER in every runtime stage.
RuleResult check_dockerfile(const std::string& path);

// The rule names check_variant reports, in order.
const std::vector<std::string>& rule_names();

}  // namespace k8s
