// The validator on the chapter's own manifests (which rules fail for which
// variant) and on broken copies (each check can fail).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "testkit/process.hpp"
#include "testkit/redis.hpp"
#include "k8s/manifest.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::string kValidate = std::string(CHAPTER_BIN_DIR) + "/k8s-validate";
const std::string kChapter = CHAPTER_SOURCE_DIR;

struct Run {
  testkit::ExitStatus status;
  std::string out, err;
  std::set<std::string> failed, passed;  // rule names
};

Run validate(std::vector<std::string> args) {
  args.insert(args.begin(), kValidate);
  auto f = testkit::run_to_exit(std::move(args), testkit::scaled(10s));
  Run r{f.status, f.out, f.err, {}, {}};
  static const std::regex line(R"(^  (✓|✗) (\S+) )");
  std::istringstream in(r.out);
  for (std::string l; std::getline(in, l);) {
    std::smatch m;
    if (std::regex_search(l, m, line)) (m[1] == "✓" ? r.passed : r.failed).insert(m[2]);
  }
  return r;
}

// A copy of a variant in a temporary chapter directory, edited by `edit`.
struct Scratch {
  fs::path root;
  explicit Scratch(const std::string& variant) {
    char tmpl[] = "/tmp/k8s-validate-XXXXXX";
    root = ::mkdtemp(tmpl);
    fs::create_directories(root / "manifests" / variant);
    fs::copy(fs::path(kChapter) / "manifests" / variant, root / "manifests" / variant);
    fs::copy_file(fs::path(kChapter) / "Dockerfile", root / "Dockerfile");
    fs::create_directory_symlink(fs::path(kChapter) / "schema", root / "schema");  // the npm packages
  }
  ~Scratch() { fs::remove_all(root); }
  void replace(const std::string& file, const std::string& from, const std::string& to) {
    std::ifstream in(root / file);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string s = ss.str();
    auto pos = s.find(from);
    REQUIRE(pos != std::string::npos);
    s.replace(pos, from.size(), to);
    std::ofstream(root / file) << s;
  }
};

}  // namespace

TEST_CASE("validate 010-naive: fails readiness, preStop, budget, connection age, rollout (minReadySeconds), security and resources") {
  auto r = validate({"--dir", kChapter, "--variant", "010-naive"});
  INFO(r.out);
  CHECK(r.status.exited);
  CHECK(r.status.code == 1);
  CHECK(r.failed == std::set<std::string>{"readiness-probe", "prestop", "grace-budget", "connection-age", "rollout",
                                          "security", "resources"});
  CHECK(r.out.find("grpc: 010-naive-exit has no maximum connection age") != std::string::npos);
  // replicas 1 with the default 25%/25%: maxUnavailable 0, maxSurge 1 already.
  CHECK(r.out.find("minReadySeconds 0 < 5") != std::string::npos);
  CHECK(r.out.find("maxUnavailable 0 (default 25% of 1)") == std::string::npos);
  CHECK(r.passed.count("structure"));
  CHECK(r.passed.count("schema"));
  CHECK(r.passed.count("server-args"));
}

TEST_CASE("validate 020-prestop-equals-grace: the grace budget fails and asks for seed 001's 50 s, the connection age fails as in 030") {
  auto r = validate({"--dir", kChapter, "--variant", "020-prestop-equals-grace"});
  INFO(r.out);
  CHECK(r.status.code == 1);
  CHECK(r.failed == std::set<std::string>{"grace-budget", "connection-age"});
  CHECK(r.out.find("http: grace 30 s < preStop 30 + deadline 15 (drain 5 included) + margin 5 = 50 s") !=
        std::string::npos);
  CHECK(r.out.find("grpc: grace 30 s < preStop 30 + deadline 15 (drain 5 included) + margin 5 = 50 s") !=
        std::string::npos);
}

// The rule the simulator's "left" column measures (sim_test.cpp): 030's gRPC
// server keeps the default age of 5 minutes, so its pinned callers are all
// still on the old pod when the drain ends.
TEST_CASE("validate 030-drain: every rule passes but the connection age, whose default (300 s) does not fit in the 5 s drain") {
  auto r = validate({"--dir", kChapter, "--variant", "030-drain"});
  INFO(r.out);
  CHECK(r.status.code == 1);
  CHECK(r.failed == std::set<std::string>{"connection-age"});
  CHECK(r.out.find("grpc: age 300 s × 1.1 = 330 s (default) >= drain 5 s") != std::string::npos);
}

TEST_CASE("validate 035-connection-age and 040-native-sleep: every rule passes") {
  for (const char* v : {"035-connection-age", "040-native-sleep"}) {
    auto r = validate({"--dir", kChapter, "--variant", v});
    INFO(v << "\n" << r.out);
    CHECK(r.status.ok());
    CHECK(r.failed.empty());
    CHECK(r.passed.size() == 12);  // 10 rules + schema + the Dockerfile
    CHECK(r.out.find("grpc: age 2 s × 1.1 = 2.2 s < drain 5 s") != std::string::npos);
  }
}

TEST_CASE("validate connection-age: an age whose jitter reaches the end of the drain fails (4.6 s), one that ends before passes (4.5 s)") {
  for (const auto& [age, ok] : std::vector<std::pair<std::string, bool>>{{"5000", false}, {"4600", false},
                                                                          {"4500", true}}) {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/grpc.yaml", "\"--max-connection-age-ms\", \"2000\"",
              "\"--max-connection-age-ms\", \"" + age + "\"");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(age << "\n" << r.out);
    CHECK(r.failed == (ok ? std::set<std::string>{} : std::set<std::string>{"connection-age"}));
  }
}

TEST_CASE("validate redis and the Dockerfile: structure, security and exec-form tini entrypoint pass") {
  auto r = validate({"--dir", kChapter, "--variant", "redis"});
  INFO(r.out);
  CHECK(r.status.ok());
  CHECK(r.passed == std::set<std::string>{"structure", "schema", "security", "resources", "dockerfile"});
}

TEST_CASE("validate structure: an unknown field, a wrong apiVersion and a wrong type are each rejected") {
  struct Case {
    std::string from, to, expect;
  };
  for (const auto& c : {Case{"terminationGracePeriodSeconds: 25", "terminationGracePeriodSecond: 25",
                             "terminationGracePeriodSecond: unknown field"},
                        Case{"apiVersion: apps/v1", "apiVersion: apps/v1beta1", "expected 'apps/v1'"},
                        Case{"periodSeconds: 1", "periodSeconds: one", "periodSeconds: expected an integer"},
                        Case{"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: \"yes\"",
                             "readOnlyRootFilesystem: expected true or false"},
                        Case{"kind: Service", "kind: Servce", "unknown kind 'Servce'"}}) {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", c.from, c.to);
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.status.code == 1);
    CHECK(r.failed.count("structure"));
    CHECK(r.out.find(c.expect) != std::string::npos);
  }
}

TEST_CASE("validate schema: the official schema rejects a wrong type and a missing field, and lets an unknown field through") {
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "terminationGracePeriodSeconds: 25", "terminationGracePeriodSeconds: \"25\"");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed.count("schema"));
    CHECK(r.out.find("terminationGracePeriodSeconds must be integer") != std::string::npos);
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/grpc.yaml", "      containers:\n", "      initContainers:\n");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed.count("schema"));
    CHECK(r.out.find("containers") != std::string::npos);
  }
  {
    // The schema has no additionalProperties: false: only the project's model catches a typo.
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "terminationGracePeriodSeconds: 25", "terminationGracePeriodSecond: 25");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.passed.count("schema"));
    CHECK(r.failed.count("structure"));
  }
}

TEST_CASE("validate rules: a flag the server lacks, a probe path it does not serve, a PDB that blocks drains fail") {
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "\"--drain-delay-ms\"", "\"--drain-ms\"");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    CHECK(r.failed.count("server-args"));
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "path: /readyz", "path: /ready");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    CHECK(r.failed == std::set<std::string>{"readiness-probe"});
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "path: /readyz", "path: /healthz");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.out.find("/healthz of 050-drain-first never turns 503 while draining") != std::string::npos);
  }
  {
    // replicas 1 and minAvailable 1: zero disruptions allowed, node drains block.
    Scratch s("035-connection-age");
    std::ofstream(s.root / "manifests/035-connection-age/pdb.yaml")
        << "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: http\n"
           "spec:\n  minAvailable: 1\n  selector:\n    matchLabels:\n      app: http\n";
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed == std::set<std::string>{"pdb"});
    CHECK(r.out.find("allows 0 disruptions with replicas 1") != std::string::npos);
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/grpc.yaml", "grpc:\n              port: 50051", "httpGet:\n              path: /readyz\n              port: 50051");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed == std::set<std::string>{"readiness-probe"});
  }
}

TEST_CASE("validate rollout: resolved like the Deployment controller, \"0%\" is 0, minReadySeconds is required") {
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "maxUnavailable: 0", "maxUnavailable: \"0%\"");
    s.replace("manifests/035-connection-age/app.yaml", "maxSurge: 1", "maxSurge: \"25%\"");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed.empty());
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "maxUnavailable: 0", "maxUnavailable: 1");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    CHECK(r.failed == std::set<std::string>{"rollout"});
  }
  {
    Scratch s("035-connection-age");
    s.replace("manifests/035-connection-age/app.yaml", "  minReadySeconds: 5\n", "");
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(r.out);
    CHECK(r.failed == std::set<std::string>{"rollout"});
    CHECK(r.out.find("http: minReadySeconds 0 < 5") != std::string::npos);
  }
}

TEST_CASE("validate Dockerfile: shell-form ENTRYPOINT, no tini and root USER are each rejected") {
  for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
           {"ENTRYPOINT [\"/usr/bin/tini\", \"--\"]", "ENTRYPOINT /usr/local/bin/050-drain-first"},
           {"ENTRYPOINT [\"/usr/bin/tini\", \"--\"]", "ENTRYPOINT [\"/usr/local/bin/050-drain-first\"]"},
           {"USER 10001:10001", "USER root"}}) {
    Scratch s("035-connection-age");
    s.replace("Dockerfile", from, to);
    auto r = validate({"--dir", s.root.string(), "--variant", "035-connection-age"});
    INFO(to << "\n" << r.out);
    CHECK(r.status.code == 1);
    CHECK(r.failed == std::set<std::string>{"dockerfile"});
  }
}

TEST_CASE("validate bad input: unknown variant, missing directory, unknown flag exit 2 naming the flag") {
  for (const auto& [args, flag] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--dir", kChapter, "--variant", "999-nope"}, "--variant"},
           {{"--dir", "/nonexistent"}, "--dir"},
           {{"--dir", kChapter, "--bogus", "1"}, "--bogus"},
           {{"--dir", ""}, "--dir"}}) {
    auto r = validate(args);
    INFO(r.err);
    CHECK(r.status.exited);
    CHECK(r.status.code == 2);
    CHECK(r.err.find(flag) != std::string::npos);
  }
}

TEST_CASE("manifest server args are real: each variant's server starts with its manifest's args") {
  testkit::RedisServer redis;
  for (const char* variant :
       {"010-naive", "020-prestop-equals-grace", "030-drain", "035-connection-age", "040-native-sleep"}) {
    const auto v = k8s::load_variant(kChapter + "/manifests/" + variant);
    REQUIRE(v.deployments.size() == 2);
    for (const auto& d : v.deployments) {
      const auto& c = d.containers.at(0);
      const std::string dir = c.image.rfind("gs-grpc:", 0) == 0 ? K8S_GRPC_DIR : K8S_HTTP_DIR;
      std::vector<std::string> argv{dir + "/" + c.binary()};
      for (std::size_t i = 0; i < c.args.size(); ++i) {
        argv.push_back(c.args[i]);
        // Pod-local values: the port is shared by every pod, the Redis Service name does not resolve here.
        const auto& a = c.args[i];
        if (a == "--port") argv.push_back("0"), ++i;
        if (a == "--redis") argv.push_back(redis.address()), ++i;
        if (a == "--listen") argv.push_back("127.0.0.1"), ++i;
      }
      testkit::Process p(argv);
      INFO(variant << " " << d.name << "\n" << p.transcript());
      p.expect_line("ready port=", testkit::scaled(5s));
      p.kill();
    }
  }
}
