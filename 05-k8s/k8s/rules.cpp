#include "rules.hpp"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace k8s {
namespace {

// What the course's servers accept and serve, by image and binary (their
// flag parsing and routes; a test runs each binary with the manifests' args
// to keep this table honest).
struct Server {
  std::set<std::string> flags;
  std::string probe;        // "httpGet" or "grpc": the readiness protocol it speaks
  std::set<std::string> paths;  // httpGet paths it serves
  bool readiness_drains;    // readiness turns false (503 / NOT_SERVING) at SIGTERM
  bool has_deadline;        // --shutdown-timeout-ms bounds the stop
  std::string drain_flag;   // its drain delay flag, included in the deadline
  std::string age_flag;     // gRPC: its maximum connection age flag, if it has one
  long long age_default_ms; // and the age it uses without the flag
};
const std::map<std::string, Server>& servers() {
  static const std::set<std::string> http{"--port", "--redis", "--work-ms", "--handler-ms",
                                          "--threads", "--max-pending", "--trace"};
  static const std::set<std::string> paths{"/incr", "/healthz", "/readyz"};
  auto with = [](std::set<std::string> f, std::initializer_list<std::string> more) {
    f.insert(more);
    return f;
  };
  static const std::map<std::string, Server> table{
      {"gs-http/010-naive-exit", {with(http, {"--listen"}), "httpGet", paths, false, false, "", "", 0}},
      {"gs-http/050-drain-first",
       {with(http, {"--listen", "--keep-alive-max", "--shutdown-timeout-ms", "--drain-delay-ms"}), "httpGet",
        paths, true, true, "--drain-delay-ms", "", 0}},
      {"gs-grpc/010-naive-exit", {{"--listen", "--port", "--redis"}, "grpc", {}, false, false, "", "", 0}},
      {"gs-grpc/060-connection-age",
       {{"--listen", "--port", "--redis", "--shutdown-timeout-ms", "--drain-ms", "--max-connection-age-ms",
         "--max-connection-age-grace-ms"},
        "grpc", {}, true, true, "--drain-ms", "--max-connection-age-ms", 300'000}},
  };
  return table;
}
std::string server_key(const Container& c) { return c.image.substr(0, c.image.find(':')) + "/" + c.binary(); }

// maxSurge / maxUnavailable as the Deployment controller resolves them:
// an integer, or a percentage of replicas rounded up (surge) or down
// (unavailable). Default 25%. -1: not understood.
int resolve(const std::optional<std::string>& v, int replicas, bool round_up) {
  const std::string s = v.value_or("25%");
  try {
    if (!s.empty() && s.back() == '%') {
      const double pct = std::stod(s.substr(0, s.size() - 1)) * replicas / 100.0;
      return static_cast<int>(round_up ? std::ceil(pct) : std::floor(pct));
    }
    return std::stoi(s);
  } catch (...) {
    return -1;
  }
}

long long ms_arg(const Container& c, const std::string& flag, long long fallback) {
  auto v = arg_value(c.args, flag);
  if (!v) return fallback;
  try {
    return std::stoll(*v);
  } catch (...) {
    return -1;
  }
}

// The server's drain delay in the container's args, or the server's own
// default (chapter 03's --drain-ms 1000, chapter 02's --drain-delay-ms
// 2000); 0 for a server that does not drain, -1 if not a number.
long long drain_ms_of(const Container& c, const Server& s) {
  if (s.drain_flag.empty()) return 0;
  return ms_arg(c, s.drain_flag, s.drain_flag == "--drain-ms" ? 1000 : 2000);
}

bool selects(const std::map<std::string, std::string>& selector, const std::map<std::string, std::string>& labels) {
  if (selector.empty()) return false;
  for (const auto& [k, val] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != val) return false;
  }
  return true;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

}  // namespace

const std::vector<std::string>& rule_names() {
  static const std::vector<std::string> names{"structure", "server-args", "readiness-probe", "prestop",
                                              "grace-budget", "connection-age", "rollout", "pdb",
                                              "security", "resources"};
  return names;
}

std::vector<RuleResult> check_variant(const Variant& v) {
  std::vector<RuleResult> out;
  auto add = [&](const std::string& rule, const std::vector<std::string>& problems, const std::string& fine) {
    out.push_back({rule, problems.empty(), problems.empty() ? fine : join(problems, "; ")});
  };

  std::vector<std::string> kinds_problems = v.structure;
  if (v.deployments.empty() && v.structure.empty()) kinds_problems.push_back("no Deployment");
  add("structure", kinds_problems, std::to_string(v.kinds.size()) + " documents: " + join(v.kinds, ", "));

  // The other rules look at the Deployment(s) that passed the structural check.
  std::vector<std::string> args_p, ready_p, pre_p, budget_p, age_p, roll_p, pdb_p, sec_p, res_p;
  std::string args_ok, ready_ok, pre_ok, budget_ok, age_ok, roll_ok, pdb_ok,
      sec_ok = "non-root, read-only root, no escalation", res_ok = "requests and limits";
  for (const auto& d : v.deployments) {
    for (const auto& c : d.containers) {
      const std::string who = c.name;
      const auto bin = c.binary();
      auto srv = servers().find(server_key(c));
      if (srv == servers().end()) {
        args_p.push_back(who + ": runs '" + server_key(c) + "', not one of the course's servers");
      } else {
        for (const auto& a : c.args)
          if (a.rfind("--", 0) == 0 && !srv->second.flags.count(a.substr(0, a.find('='))))
            args_p.push_back(who + ": " + bin + " has no flag " + a);
        args_ok += (args_ok.empty() ? "" : ", ") + who + ": " + bin;
      }
      // readiness
      if (!c.readiness) {
        ready_p.push_back(who + ": no readinessProbe (Ready as soon as the process starts)");
      } else if (srv != servers().end() && c.readiness->kind != srv->second.probe) {
        ready_p.push_back(who + ": readinessProbe is " + c.readiness->kind + ", " + bin + " answers " +
                          srv->second.probe);
      } else if (srv != servers().end() && c.readiness->kind == "httpGet" &&
                 !srv->second.paths.count(c.readiness->path)) {
        ready_p.push_back(who + ": " + bin + " does not serve " + c.readiness->path);
      } else if (srv != servers().end() && !srv->second.readiness_drains) {
        ready_p.push_back(who + ": the readiness of " + bin + " never turns false while draining");
      } else if (srv != servers().end() && c.readiness->kind == "httpGet" && c.readiness->path != "/readyz") {
        ready_p.push_back(who + ": " + c.readiness->path + " of " + bin + " never turns 503 while draining");
      } else {
        ready_ok += (ready_ok.empty() ? "" : ", ") + c.readiness->kind +
                    (c.readiness->kind == "httpGet" ? " " + c.readiness->path : "") + " every " +
                    std::to_string(c.readiness->period_s) + " s";
      }
      // preStop
      if (c.pre_stop.kind.empty()) {
        pre_p.push_back(who + ": no preStop hook (SIGTERM while endpoints still route here)");
      } else if (c.pre_stop.kind == "sleep" && c.pre_stop.seconds > d.grace_s.value_or(30)) {
        pre_p.push_back(who + ": preStop sleep.seconds " + std::to_string(c.pre_stop.seconds) +
                        " > the grace period: the API server rejects the pod");
      } else if (c.pre_stop.kind == "sleep" && c.pre_stop.seconds == 0) {
        pre_p.push_back(who + ": preStop sleep of 0 s does nothing (and is accepted only from Kubernetes 1.33)");
      } else if (c.pre_stop.seconds < kMinPreStopSeconds) {
        pre_p.push_back(who + ": preStop " + c.pre_stop.kind + " lasts " + std::to_string(c.pre_stop.seconds) +
                        " s, < " + std::to_string(kMinPreStopSeconds) + " s");
      } else {
        const std::string mine = c.pre_stop.kind + " " + std::to_string(c.pre_stop.seconds) + " s";
        if (pre_ok.find(mine) == std::string::npos) pre_ok += (pre_ok.empty() ? "" : ", ") + mine;
      }
      // budget: grace >= preStop + deadline (drain included for 050) + margin
      const int grace = d.grace_s.value_or(30);
      const std::string grace_txt = std::to_string(grace) + (d.grace_s ? " s" : " s (default)");
      if (srv == servers().end() || !srv->second.has_deadline) {
        budget_p.push_back(who + ": " + (bin.empty() ? std::string("the server") : bin) +
                           " has no shutdown deadline, its stop is unbounded (grace " + grace_txt + ")");
      } else {
        const long long deadline_ms = ms_arg(c, "--shutdown-timeout-ms", 10'000);
        const auto& drain_flag = srv->second.drain_flag;
        const long long drain_ms = drain_ms_of(c, srv->second);
        if (deadline_ms < 0 || drain_ms < 0) {
          budget_p.push_back(who + ": --shutdown-timeout-ms / " + drain_flag + " are not numbers");
        } else {
          const long long deadline_s = (deadline_ms + 999) / 1000;
          const long long need = c.pre_stop.seconds + deadline_s + kMarginSeconds;
          const std::string sum = "preStop " + std::to_string(c.pre_stop.seconds) + " + deadline " +
                                  std::to_string(deadline_s) + " (drain " + std::to_string(drain_ms / 1000) +
                                  " included) + margin " + std::to_string(kMarginSeconds) + " = " +
                                  std::to_string(need) + " s";
          if (drain_ms >= deadline_ms)
            budget_p.push_back(who + ": " + drain_flag + " must be shorter than --shutdown-timeout-ms");
          if (grace < need)
            budget_p.push_back(who + ": grace " + grace_txt + " < " + sum + ": SIGKILL " +
                               std::to_string(std::max(2, grace - c.pre_stop.seconds)) + " s after SIGTERM");
          else
            budget_ok = "grace " + grace_txt + " >= " + sum;  // the same for every container here
        }
      }
      // connection age (gRPC): callers that keep one channel (seed 001) are
      // never moved by an endpoint change, only by a GOAWAY. The age's
      // GOAWAY must reach each of them while the server still serves: a
      // caller that reconnected to this pod just before its endpoint
      // removal took effect (at most the preStop) gets its next one within
      // age × 1.1 (gRPC's jitter), so that must fit in the drain.
      if (srv != servers().end() && srv->second.probe == "grpc") {
        const auto& drain_flag = srv->second.drain_flag;
        const long long drain_ms = drain_ms_of(c, srv->second);
        if (srv->second.age_flag.empty()) {
          age_p.push_back(who + ": " + bin + " has no maximum connection age: callers that keep their connection " +
                          "stay on the old pod until it stops serving");
        } else {
          const long long age_ms = ms_arg(c, srv->second.age_flag, srv->second.age_default_ms);
          auto secs = [](long long ms) {
            char b[32];
            std::snprintf(b, sizeof b, "%g s", static_cast<double>(ms) / 1000);
            return std::string(b);
          };
          const std::string sum = "age " + secs(age_ms) + " × 1.1 = " + secs(age_ms * 11 / 10);
          if (age_ms < 0 || drain_ms < 0)
            age_p.push_back(who + ": " + srv->second.age_flag + " / " + drain_flag + " are not numbers");
          else if (age_ms * 11 / 10 >= drain_ms)
            age_p.push_back(who + ": " + sum + (arg_value(c.args, srv->second.age_flag) ? "" : " (default)") +
                            " >= drain " + secs(drain_ms) + ": callers that keep their connection are still on " +
                            "the old pod when it stops serving");
          else
            age_ok += (age_ok.empty() ? "" : ", ") + who + ": " + sum + " < drain " + secs(drain_ms);
        }
      }
      // security
      const bool non_root = c.run_as_non_root.value_or(d.pod_run_as_non_root.value_or(false));
      const long long uid = c.run_as_user.value_or(d.pod_run_as_user.value_or(-1));
      if (!non_root) sec_p.push_back(who + ": runAsNonRoot not true");
      if (uid == 0) sec_p.push_back(who + ": runAsUser 0");
      if (uid < 0) sec_p.push_back(who + ": no numeric runAsUser (the image's USER decides)");
      if (c.allow_privilege_escalation.value_or(true)) sec_p.push_back(who + ": allowPrivilegeEscalation not false");
      if (!c.read_only_root_fs.value_or(false)) sec_p.push_back(who + ": readOnlyRootFilesystem not true");
      if (!c.has_requests || !c.has_limits) res_p.push_back(who + ": resources.requests/limits missing");
    }
    // rollout: capacity never drops, and the old pod goes only once the new
    // one is Available (Ready for minReadySeconds) long enough for its
    // endpoint to reach every kube-proxy.
    const int unavailable = resolve(d.max_unavailable, d.replicas, false);
    const int surge = resolve(d.max_surge, d.replicas, true);
    const std::string as_set = " (" + d.max_unavailable.value_or("default 25%") + " of " +
                               std::to_string(d.replicas) + ")";
    if (unavailable != 0) roll_p.push_back(d.name + ": maxUnavailable " + std::to_string(unavailable) + as_set + ", want 0");
    if (surge < 1) roll_p.push_back(d.name + ": maxSurge " + std::to_string(surge) + ", want >= 1");
    if (d.min_ready_s < kMinReadySeconds)
      roll_p.push_back(d.name + ": minReadySeconds " + std::to_string(d.min_ready_s) + " < " +
                       std::to_string(kMinReadySeconds) + " (the old pod may go before the new endpoint propagates)");
    if (!selects(d.selector, d.pod_labels)) roll_p.push_back(d.name + ": selector does not match the pod labels");
    roll_ok = "maxUnavailable " + std::to_string(unavailable) + ", maxSurge " + std::to_string(surge) +
              ", minReadySeconds " + std::to_string(d.min_ready_s);
    // PDB: optional; one that selects the pods must leave room for a
    // voluntary disruption, or every node drain blocks on it.
    for (const auto& p : v.pdbs) {
      if (!selects(p.selector, d.pod_labels)) continue;
      const int may_go = p.max_unavailable ? resolve(p.max_unavailable, d.replicas, false)
                                           : d.replicas - resolve(p.min_available, d.replicas, true);
      if (may_go < 1)
        pdb_p.push_back("PodDisruptionBudget " + p.name + " allows 0 disruptions with replicas " +
                        std::to_string(d.replicas) + ": node drains block on it");
      else
        pdb_ok = "PodDisruptionBudget " + p.name + " allows " + std::to_string(may_go) + " disruption(s)";
    }
    if (pdb_ok.empty() && pdb_p.empty()) pdb_ok = "no PodDisruptionBudget (replicas 1: one could only block drains)";
  }
  if (age_ok.empty() && age_p.empty()) age_ok = "no gRPC server";
  if (v.deployments.empty()) {
    for (auto* p : {&args_p, &ready_p, &pre_p, &budget_p, &age_p, &roll_p, &pdb_p, &sec_p, &res_p})
      p->push_back("no valid Deployment to check");
  }
  add("server-args", args_p, args_ok + " (every flag known)");
  add("readiness-probe", ready_p, ready_ok);
  add("prestop", pre_p, pre_ok);
  add("grace-budget", budget_p, budget_ok);
  add("connection-age", age_p, age_ok);
  add("rollout", roll_p, roll_ok);
  add("pdb", pdb_p, pdb_ok);
  add("security", sec_p, sec_ok);
  add("resources", res_p, res_ok);
  return out;
}

RuleResult check_schema(const std::string& chapter_dir, const std::string& variant_dir) {
  const std::string dir = chapter_dir + "/schema";
  if (!std::ifstream(dir + "/node_modules/kubernetes-models/package.json"))
    return {"schema", false, "kubernetes-models not installed: npm ci in " + dir + " (scripts/install-deps)"};
  // Arguments are our own paths; quote them for the shell anyway.
  auto quote = [](const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  const std::string cmd = "node " + quote(dir + "/check.mjs") + " " + quote(variant_dir) + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {"schema", false, "cannot run node"};
  std::string out;
  char buf[4096];
  for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int status = ::pclose(pipe);
  std::vector<std::string> errors;
  int ok = 0;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("ok ", 0) == 0) ++ok;
    else if (!line.empty()) errors.push_back(line.rfind("error ", 0) == 0 ? line.substr(6) : line);
  }
  if (status != 0 || !errors.empty())
    return {"schema", false, errors.empty() ? "node failed: " + out : join(errors, "; ")};
  return {"schema", true, std::to_string(ok) + " documents valid against the Kubernetes OpenAPI schema"};
}

RuleResult check_dockerfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return {"dockerfile", false, "cannot read " + path};
  // Join continuation lines, drop comments.
  std::vector<std::string> lines;
  std::string line, cur;
  while (std::getline(in, line)) {
    if (cur.empty() && (line.empty() || line[0] == '#')) continue;
    if (!line.empty() && line.back() == '\\') {
      cur += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    lines.push_back(cur + line);
    cur.clear();
  }
  struct Stage {
    std::string name, entrypoint, user;
  };
  std::vector<Stage> stages;
  static const std::regex from(R"(^FROM\s+\S+(\s+AS\s+(\S+))?\s*$)", std::regex::icase);
  for (const auto& l : lines) {
    std::smatch m;
    if (std::regex_match(l, m, from)) {
      stages.push_back({m[2].matched ? m[2].str() : "stage" + std::to_string(stages.size()), "", ""});
    } else if (!stages.empty() && l.rfind("ENTRYPOINT", 0) == 0) {
      stages.back().entrypoint = l.substr(10);
    } else if (!stages.empty() && l.rfind("USER", 0) == 0) {
      stages.back().user = l.substr(4);
    }
  }
  std::vector<std::string> problems, fine;
  int runtime = 0;
  for (const auto& s : stages) {
    if (s.entrypoint.empty()) continue;  // a build stage: never runs as a container
    ++runtime;
    auto ep = s.entrypoint;
    ep.erase(0, ep.find_first_not_of(' '));
    if (ep.empty() || ep[0] != '[')
      problems.push_back(s.name + ": ENTRYPOINT in shell form (/bin/sh becomes PID 1 and swallows SIGTERM)");
    else if (ep.find("tini") == std::string::npos && ep.find("dumb-init") == std::string::npos)
      problems.push_back(s.name + ": ENTRYPOINT without tini/dumb-init (no reaping, no signal forwarding)");
    auto user = s.user;
    user.erase(0, user.find_first_not_of(' '));
    const auto uid = user.substr(0, user.find(':'));
    if (uid.empty() || uid == "root" || uid == "0")
      problems.push_back(s.name + ": runs as root (no USER, or USER root)");
    fine.push_back(s.name);
  }
  if (runtime == 0) problems.push_back("no stage with an ENTRYPOINT");
  if (!problems.empty()) return {"dockerfile", false, join(problems, "; ")};
  return {"dockerfile", true, "exec-form ENTRYPOINT via tini, non-root USER in " + join(fine, ", ")};
}

}  // namespace k8s
