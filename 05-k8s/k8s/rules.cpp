#include "rules.hpp"

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

namespace k8s {
namespace {

// What the chapter 02 servers accept and serve (their flag parsing and
// routes; a test runs each binary with the manifests' args to keep this
// table honest).
struct Server {
  std::set<std::string> flags;
  std::set<std::string> paths;
  bool readiness_drains;  // /readyz turns 503 at SIGTERM
  bool has_deadline;      // --shutdown-timeout-ms bounds the stop
};
const std::map<std::string, Server>& servers() {
  static const std::set<std::string> common{"--port", "--redis", "--work-ms", "--handler-ms",
                                            "--threads", "--max-pending", "--trace"};
  static const std::map<std::string, Server> table{
      {"010-naive-exit", {common, {"/incr", "/healthz", "/readyz"}, false, false}},
      {"020-stop-on-signal", {common, {"/incr", "/healthz", "/readyz"}, false, false}},
      {"030-track-background-work", {common, {"/incr", "/healthz", "/readyz"}, false, false}},
      {"040-shutdown-deadline",
       {[] { auto f = common; f.insert("--shutdown-timeout-ms"); return f; }(),
        {"/incr", "/healthz", "/readyz"}, false, true}},
      {"050-drain-first",
       {[] { auto f = common; f.insert({"--shutdown-timeout-ms", "--drain-delay-ms"}); return f; }(),
        {"/incr", "/healthz", "/readyz"}, true, true}},
  };
  return table;
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
                                              "grace-budget", "rollout",     "pdb",             "security",
                                              "resources"};
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
  std::vector<std::string> args_p, ready_p, pre_p, budget_p, roll_p, pdb_p, sec_p, res_p;
  std::string args_ok, ready_ok, pre_ok, budget_ok, roll_ok, pdb_ok, sec_ok = "non-root, read-only root, no escalation",
                                                                      res_ok = "requests and limits";
  for (const auto& d : v.deployments) {
    for (const auto& c : d.containers) {
      const std::string who = c.name;
      const auto bin = c.binary();
      auto srv = servers().find(bin);
      if (srv == servers().end()) {
        args_p.push_back(who + ": runs '" + bin + "', not a chapter 02 server");
      } else {
        for (const auto& a : c.args)
          if (a.rfind("--", 0) == 0 && !srv->second.flags.count(a.substr(0, a.find('='))))
            args_p.push_back(who + ": " + bin + " has no flag " + a);
        args_ok = bin + " " + join(c.args, " ");
      }
      // readiness
      if (!c.readiness) {
        ready_p.push_back(who + ": no readinessProbe (Ready as soon as the process starts)");
      } else if (c.readiness->kind != "httpGet") {
        ready_p.push_back(who + ": readinessProbe is " + c.readiness->kind + ", not httpGet");
      } else if (srv != servers().end() && !srv->second.paths.count(c.readiness->path)) {
        ready_p.push_back(who + ": " + bin + " does not serve " + c.readiness->path);
      } else if (srv != servers().end() && !(c.readiness->path == "/readyz" && srv->second.readiness_drains)) {
        ready_p.push_back(who + ": " + c.readiness->path + " of " + bin + " never turns 503 while draining");
      } else {
        ready_ok = "httpGet " + c.readiness->path + " every " + std::to_string(c.readiness->period_s) + " s";
      }
      // preStop
      if (c.pre_stop.kind.empty()) {
        pre_p.push_back(who + ": no preStop hook (SIGTERM while endpoints still route here)");
      } else if (c.pre_stop.seconds < kMinPreStopSeconds) {
        pre_p.push_back(who + ": preStop " + c.pre_stop.kind + " lasts " + std::to_string(c.pre_stop.seconds) +
                        " s, < " + std::to_string(kMinPreStopSeconds) + " s");
      } else {
        pre_ok = c.pre_stop.kind + " " + std::to_string(c.pre_stop.seconds) + " s";
      }
      // budget: grace >= preStop + deadline (drain included for 050) + margin
      const int grace = d.grace_s.value_or(30);
      const std::string grace_txt = std::to_string(grace) + (d.grace_s ? " s" : " s (default)");
      if (srv == servers().end() || !srv->second.has_deadline) {
        budget_p.push_back(who + ": " + (bin.empty() ? std::string("the server") : bin) +
                           " has no shutdown deadline, its stop is unbounded (grace " + grace_txt + ")");
      } else {
        const long long deadline_ms = ms_arg(c, "--shutdown-timeout-ms", 10'000);
        const long long drain_ms = ms_arg(c, "--drain-delay-ms", srv->second.readiness_drains ? 2000 : 0);
        if (deadline_ms < 0 || drain_ms < 0) {
          budget_p.push_back(who + ": --shutdown-timeout-ms / --drain-delay-ms are not numbers");
        } else {
          const long long deadline_s = (deadline_ms + 999) / 1000;
          const long long need = c.pre_stop.seconds + deadline_s + kMarginSeconds;
          const std::string sum = "preStop " + std::to_string(c.pre_stop.seconds) + " + deadline " +
                                  std::to_string(deadline_s) + " (drain " + std::to_string(drain_ms / 1000) +
                                  " included) + margin " + std::to_string(kMarginSeconds) + " = " +
                                  std::to_string(need) + " s";
          if (drain_ms >= deadline_ms)
            budget_p.push_back(who + ": --drain-delay-ms must be shorter than --shutdown-timeout-ms");
          if (grace < need)
            budget_p.push_back("grace " + grace_txt + " < " + sum + ": SIGKILL " +
                               std::to_string(std::max(2, grace - c.pre_stop.seconds)) + " s after SIGTERM");
          else
            budget_ok = "grace " + grace_txt + " >= " + sum;
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
    // rollout: capacity never drops during a rolling update
    if (!d.max_unavailable || *d.max_unavailable != "0")
      roll_p.push_back("maxUnavailable " + (d.max_unavailable ? *d.max_unavailable : "not set (default 25%)") +
                       ", want 0");
    if (!d.max_surge || *d.max_surge == "0" || *d.max_surge == "0%")
      roll_p.push_back("maxSurge " + (d.max_surge ? *d.max_surge : "not set (default 25%)") + ", want >= 1");
    if (roll_p.empty()) roll_ok = "maxUnavailable 0, maxSurge " + *d.max_surge;
    if (!selects(d.selector, d.pod_labels)) roll_p.push_back("selector does not match the pod labels");
    // PDB selecting the pods
    bool found = false;
    for (const auto& p : v.pdbs)
      if (p.has_budget && selects(p.selector, d.pod_labels)) {
        found = true;
        pdb_ok = "PodDisruptionBudget " + p.name + " selects the pods";
      }
    if (!found) pdb_p.push_back("no PodDisruptionBudget selects the pods of " + d.name);
  }
  if (v.deployments.empty()) {
    for (auto* p : {&args_p, &ready_p, &pre_p, &budget_p, &roll_p, &pdb_p, &sec_p, &res_p})
      p->push_back("no valid Deployment to check");
  }
  add("server-args", args_p, args_ok);
  add("readiness-probe", ready_p, ready_ok);
  add("prestop", pre_p, pre_ok);
  add("grace-budget", budget_p, budget_ok);
  add("rollout", roll_p, roll_ok);
  add("pdb", pdb_p, pdb_ok);
  add("security", sec_p, sec_ok);
  add("resources", res_p, res_ok);
  return out;
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
