// k8s-validate: checks the chapter's manifest variants and Dockerfile,
// offline. Structure: the project's own model of the fields it uses (see
// manifest.hpp), which rejects unknown fields; schema: the official
// Kubernetes OpenAPI schema (kubernetes-models, schema/check.mjs), which
// checks types and required fields but allows unknown ones. Budget and
// safety: the rules in rules.cpp. Prints one line per rule and a verdict per variant;
// exit 0 when every rule passes, 1 when one fails, 2 on bad flags.
//
//   k8s-validate --dir 05-k8s                   # every variant + Dockerfile
//   k8s-validate --dir 05-k8s --variant 030-drain
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "k8s/rules.hpp"
#include "support/flags.hpp"

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: k8s-validate [--dir CHAPTER_DIR] [--variant NAME|all] [--dockerfile PATH]\n"
                       "  checks CHAPTER_DIR/manifests/<variant>/*.yaml and the Dockerfile");
  const auto dir = flags.text("--dir", "05-k8s", 4000);
  auto only = flags.text("--variant", "all");
  const auto dockerfile = flags.text("--dockerfile", dir + "/Dockerfile", 4000);
  flags.done();

  namespace fs = std::filesystem;
  const fs::path root = fs::path(dir) / "manifests";
  std::vector<std::string> variants;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec))
    if (e.is_directory()) variants.push_back(e.path().filename().string());
  if (ec) support::Flags::fail("--dir", "no manifests/ directory in " + dir);
  std::sort(variants.begin(), variants.end());
  if (only == "all") only.clear();
  if (!only.empty()) {
    if (std::find(variants.begin(), variants.end(), only) == variants.end())
      support::Flags::fail("--variant", "no variant " + only + " in " + root.string());
    variants = {only};
  }

  int failed_total = 0;
  auto line = [](const k8s::RuleResult& r) {
    std::printf("  %s %-16s %s\n", r.ok ? "✓" : "✗", r.rule.c_str(), r.detail.c_str());
  };
  for (const auto& name : variants) {
    k8s::Variant v;
    try {
      v = k8s::load_variant((root / name).string());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
    std::printf("%s\n", name.c_str());
    int failed = 0;
    if (v.deployments.empty() && v.structure.empty()) {
      std::printf("  (no app Deployment)\n");
    }
    auto results = k8s::check_variant(v);
    results.insert(results.begin() + 1, k8s::check_schema(dir, (root / name).string()));
    for (const auto& r : results) {
      // The Redis manifests run no chapter server: only structure applies.
      if (name == "redis" && r.rule != "structure" && r.rule != "schema" && r.rule != "security" &&
          r.rule != "resources")
        continue;
      line(r);
      if (!r.ok) ++failed;
    }
    std::printf("  verdict: %s\n", failed == 0 ? "pass" : ("FAIL, " + std::to_string(failed) + (failed == 1 ? " rule" : " rules")).c_str());
    failed_total += failed;
  }
  {
    const auto r = k8s::check_dockerfile(dockerfile);
    std::printf("Dockerfile\n");
    line(r);
    std::printf("  verdict: %s\n", r.ok ? "pass" : "FAIL");
    if (!r.ok) ++failed_total;
  }
  return failed_total == 0 ? 0 : 1;
}
