#include "manifest.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <set>
#include <stdexcept>

namespace k8s {
namespace {

namespace fs = std::filesystem;

// The model: for each mapping, the keys it may have and the type of each.
enum class T { str, integer, boolean, int_or_str, str_map, str_list, map, list_of_maps, any_map };
struct Field {
  T type;
  bool required = false;
  const std::map<std::string, Field>* child = nullptr;  // map / list_of_maps
};
using Schema = std::map<std::string, Field>;

const Schema kMetadata{{"name", {T::str, true}}, {"namespace", {T::str}}, {"labels", {T::str_map}},
                       {"annotations", {T::str_map}}};
const Schema kPodMetadata{{"labels", {T::str_map, true}}, {"annotations", {T::str_map}}};
const Schema kSelector{{"matchLabels", {T::str_map, true}}};
const Schema kHttpGet{{"path", {T::str, true}}, {"port", {T::int_or_str, true}}, {"scheme", {T::str}}};
const Schema kGrpc{{"port", {T::integer, true}}, {"service", {T::str}}};
const Schema kTcp{{"port", {T::int_or_str, true}}};
const Schema kExec{{"command", {T::str_list, true}}};
const Schema kSleep{{"seconds", {T::integer, true}}};
const Schema kProbe{{"httpGet", {T::map, false, &kHttpGet}}, {"tcpSocket", {T::map, false, &kTcp}},
                    {"exec", {T::map, false, &kExec}},       {"grpc", {T::map, false, &kGrpc}},
                    {"periodSeconds", {T::integer}},
                    {"initialDelaySeconds", {T::integer}},   {"timeoutSeconds", {T::integer}},
                    {"failureThreshold", {T::integer}},      {"successThreshold", {T::integer}}};
const Schema kHandler{{"exec", {T::map, false, &kExec}}, {"sleep", {T::map, false, &kSleep}},
                      {"httpGet", {T::map, false, &kHttpGet}}};
const Schema kLifecycle{{"preStop", {T::map, false, &kHandler}}, {"postStart", {T::map, false, &kHandler}}};
const Schema kPort{{"name", {T::str}}, {"containerPort", {T::integer, true}}, {"protocol", {T::str}}};
const Schema kCaps{{"drop", {T::str_list}}, {"add", {T::str_list}}};
const Schema kCtrSec{{"allowPrivilegeEscalation", {T::boolean}}, {"readOnlyRootFilesystem", {T::boolean}},
                     {"runAsNonRoot", {T::boolean}},             {"runAsUser", {T::integer}},
                     {"runAsGroup", {T::integer}},               {"capabilities", {T::map, false, &kCaps}}};
const Schema kResources{{"requests", {T::str_map}}, {"limits", {T::str_map}}};
const Schema kMount{{"name", {T::str, true}}, {"mountPath", {T::str, true}}, {"readOnly", {T::boolean}}};
const Schema kContainer{{"name", {T::str, true}},
                        {"image", {T::str, true}},
                        {"command", {T::str_list}},
                        {"args", {T::str_list}},
                        {"ports", {T::list_of_maps, false, &kPort}},
                        {"readinessProbe", {T::map, false, &kProbe}},
                        {"livenessProbe", {T::map, false, &kProbe}},
                        {"startupProbe", {T::map, false, &kProbe}},
                        {"lifecycle", {T::map, false, &kLifecycle}},
                        {"securityContext", {T::map, false, &kCtrSec}},
                        {"resources", {T::map, false, &kResources}},
                        {"volumeMounts", {T::list_of_maps, false, &kMount}}};
const Schema kPodSec{{"runAsNonRoot", {T::boolean}}, {"runAsUser", {T::integer}}, {"runAsGroup", {T::integer}},
                     {"fsGroup", {T::integer}}};
const Schema kVolume{{"name", {T::str, true}}, {"emptyDir", {T::any_map}}};
const Schema kPodSpec{{"containers", {T::list_of_maps, true, &kContainer}},
                      {"terminationGracePeriodSeconds", {T::integer}},
                      {"securityContext", {T::map, false, &kPodSec}},
                      {"volumes", {T::list_of_maps, false, &kVolume}}};
const Schema kTemplate{{"metadata", {T::map, true, &kPodMetadata}}, {"spec", {T::map, true, &kPodSpec}}};
const Schema kRolling{{"maxUnavailable", {T::int_or_str}}, {"maxSurge", {T::int_or_str}}};
const Schema kStrategy{{"type", {T::str}}, {"rollingUpdate", {T::map, false, &kRolling}}};
const Schema kDeploySpec{{"replicas", {T::integer}},
                         {"minReadySeconds", {T::integer}},
                         {"selector", {T::map, true, &kSelector}},
                         {"strategy", {T::map, false, &kStrategy}},
                         {"template", {T::map, true, &kTemplate}}};
const Schema kSvcPort{{"name", {T::str}}, {"port", {T::integer, true}}, {"targetPort", {T::int_or_str}},
                      {"protocol", {T::str}}};
const Schema kSvcSpec{{"selector", {T::str_map}}, {"ports", {T::list_of_maps, true, &kSvcPort}},
                      {"type", {T::str}}};
const Schema kPdbSpec{{"minAvailable", {T::int_or_str}}, {"maxUnavailable", {T::int_or_str}},
                      {"selector", {T::map, true, &kSelector}}};

struct Kind {
  std::string api_version;
  const Schema* spec;
};
const std::map<std::string, Kind> kKinds{{"Deployment", {"apps/v1", &kDeploySpec}},
                                         {"Service", {"v1", &kSvcSpec}},
                                         {"PodDisruptionBudget", {"policy/v1", &kPdbSpec}}};

bool is_int(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return false;  // "!" = quoted string
  try {
    (void)n.as<long long>();
    return true;
  } catch (const YAML::Exception&) {
    return false;
  }
}
bool is_bool(const YAML::Node& n) {
  if (!n.IsScalar() || n.Tag() == "!") return false;
  const auto& s = n.Scalar();
  return s == "true" || s == "false";
}

void check(const YAML::Node& node, const Schema& schema, const std::string& where, std::vector<std::string>& errs) {
  if (!node.IsMap()) {
    errs.push_back(where + ": expected a mapping");
    return;
  }
  for (const auto& kv : node) {
    const auto key = kv.first.as<std::string>();
    const auto path = where + "." + key;
    auto it = schema.find(key);
    if (it == schema.end()) {
      errs.push_back(path + ": unknown field");
      continue;
    }
    const Field& f = it->second;
    const YAML::Node& v = kv.second;
    auto bad = [&](const char* what) { errs.push_back(path + ": expected " + what); };
    switch (f.type) {
      case T::str:
        if (!v.IsScalar()) bad("a string");
        break;
      case T::integer:
        if (!is_int(v)) bad("an integer");
        break;
      case T::boolean:
        if (!is_bool(v)) bad("true or false");
        break;
      case T::int_or_str:
        if (!v.IsScalar()) bad("an integer or a string");
        break;
      case T::str_map:
        if (!v.IsMap()) {
          bad("a mapping of strings");
        } else {
          for (const auto& e : v)
            if (!e.second.IsScalar()) errs.push_back(path + "." + e.first.as<std::string>() + ": expected a string");
        }
        break;
      case T::str_list:
        if (!v.IsSequence()) {
          bad("a list of strings");
        } else {
          for (const auto& e : v)
            if (!e.IsScalar()) bad("a list of strings");
        }
        break;
      case T::map:
        check(v, *f.child, path, errs);
        break;
      case T::any_map:
        if (!v.IsMap()) bad("a mapping");
        break;
      case T::list_of_maps:
        if (!v.IsSequence() || v.size() == 0) {
          bad("a non-empty list");
        } else {
          for (std::size_t i = 0; i < v.size(); ++i) check(v[i], *f.child, path + "[" + std::to_string(i) + "]", errs);
        }
        break;
    }
  }
  for (const auto& [key, f] : schema)
    if (f.required && !node[key]) errs.push_back(where + "." + key + ": required field missing");
}

std::map<std::string, std::string> str_map(const YAML::Node& n) {
  std::map<std::string, std::string> out;
  if (n && n.IsMap())
    for (const auto& kv : n) out[kv.first.as<std::string>()] = kv.second.as<std::string>();
  return out;
}
std::vector<std::string> str_list(const YAML::Node& n) {
  std::vector<std::string> out;
  if (n && n.IsSequence())
    for (const auto& e : n) out.push_back(e.as<std::string>());
  return out;
}
template <class V>
std::optional<V> opt(const YAML::Node& n) {
  if (!n) return std::nullopt;
  try {
    return n.as<V>();
  } catch (const YAML::Exception&) {
    return std::nullopt;
  }
}

// node[a][b]... or an undefined node when a key is missing (yaml-cpp throws
// when indexing a missing key's node again).
YAML::Node at(const YAML::Node& node, std::initializer_list<const char*> keys) {
  YAML::Node cur = YAML::Clone(node);
  for (const char* k : keys) {
    if (!cur || !cur.IsMap() || !cur[k]) return YAML::Node(YAML::NodeType::Undefined);
    cur = cur[k];
  }
  return cur;
}

// Only called on documents that passed the structural check.
Deployment read_deployment(const YAML::Node& doc) {
  Deployment d;
  d.name = at(doc, {"metadata", "name"}).as<std::string>();
  const auto& spec = doc["spec"];
  d.replicas = opt<int>(spec["replicas"]).value_or(1);
  d.selector = str_map(at(spec, {"selector", "matchLabels"}));
  if (auto ru = at(spec, {"strategy", "rollingUpdate"})) {
    d.max_unavailable = opt<std::string>(ru["maxUnavailable"]);
    d.max_surge = opt<std::string>(ru["maxSurge"]);
  }
  const auto& pod = spec["template"];
  d.pod_labels = str_map(at(pod, {"metadata", "labels"}));
  const auto& ps = pod["spec"];
  d.grace_s = opt<int>(ps["terminationGracePeriodSeconds"]);
  d.min_ready_s = opt<int>(spec["minReadySeconds"]).value_or(0);
  d.pod_run_as_non_root = opt<bool>(at(ps, {"securityContext", "runAsNonRoot"}));
  d.pod_run_as_user = opt<long long>(at(ps, {"securityContext", "runAsUser"}));
  for (const auto& c : ps["containers"]) {
    Container k;
    k.name = c["name"].as<std::string>();
    k.image = c["image"].as<std::string>();
    k.command = str_list(c["command"]);
    k.args = str_list(c["args"]);
    if (const auto& rp = c["readinessProbe"]) {
      Probe p;
      p.kind = rp["httpGet"] ? "httpGet" : rp["grpc"] ? "grpc" : rp["tcpSocket"] ? "tcpSocket" : rp["exec"] ? "exec" : "";
      if (rp["httpGet"]) p.path = at(rp, {"httpGet", "path"}).as<std::string>();
      p.port = opt<int>(at(rp, {p.kind.c_str(), "port"})).value_or(0);
      p.period_s = opt<int>(rp["periodSeconds"]).value_or(10);
      p.initial_delay_s = opt<int>(rp["initialDelaySeconds"]).value_or(0);
      k.readiness = p;
    }
    if (const auto& h = at(c, {"lifecycle", "preStop"})) {
      if (h["sleep"]) {
        k.pre_stop.kind = "sleep";
        k.pre_stop.seconds = opt<int>(at(h, {"sleep", "seconds"})).value_or(0);
      } else if (h["exec"]) {
        k.pre_stop.kind = "exec";
        k.pre_stop.command = str_list(at(h, {"exec", "command"}));
        // Only `sleep N` (or /bin/sleep N) is understood as a duration.
        const auto& cmd = k.pre_stop.command;
        if (cmd.size() == 2 && (cmd[0] == "sleep" || cmd[0] == "/bin/sleep" || cmd[0] == "/usr/bin/sleep"))
          k.pre_stop.seconds = opt<int>(YAML::Node(cmd[1])).value_or(0);
      }
    }
    k.allow_privilege_escalation = opt<bool>(at(c, {"securityContext", "allowPrivilegeEscalation"}));
    k.read_only_root_fs = opt<bool>(at(c, {"securityContext", "readOnlyRootFilesystem"}));
    k.run_as_non_root = opt<bool>(at(c, {"securityContext", "runAsNonRoot"}));
    k.run_as_user = opt<long long>(at(c, {"securityContext", "runAsUser"}));
    k.has_requests = static_cast<bool>(at(c, {"resources", "requests"}));
    k.has_limits = static_cast<bool>(at(c, {"resources", "limits"}));
    d.containers.push_back(std::move(k));
  }
  return d;
}

}  // namespace

std::string Container::binary() const {
  std::vector<std::string> all = command;
  all.insert(all.end(), args.begin(), args.end());
  const std::string prefix = "/usr/local/bin/";
  for (const auto& a : all)
    if (a.rfind(prefix, 0) == 0) return a.substr(prefix.size());
  return "";
}

std::optional<std::string> arg_value(const std::vector<std::string>& args, const std::string& flag) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag && i + 1 < args.size()) return args[i + 1];
    if (args[i].rfind(flag + "=", 0) == 0) return args[i].substr(flag.size() + 1);
  }
  return std::nullopt;
}

Variant load_variant(const std::string& dir) {
  Variant v;
  v.name = fs::path(dir).lexically_normal().filename().string();
  if (v.name.empty()) v.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".yaml" || e.path().extension() == ".yml") files.push_back(e.path());
  if (ec || files.empty()) throw std::runtime_error("no *.yaml manifests in " + dir);
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::vector<YAML::Node> docs;
    try {
      docs = YAML::LoadAllFromFile(file.string());
    } catch (const YAML::Exception& e) {
      v.structure.push_back(file.filename().string() + ": " + e.what());
      continue;
    }
    int index = 0;
    for (const auto& doc : docs) {
      const std::string where = file.filename().string() + "#" + std::to_string(++index);
      if (!doc.IsMap()) {
        v.structure.push_back(where + ": not a mapping");
        continue;
      }
      const auto kind = opt<std::string>(doc["kind"]).value_or("");
      auto k = kKinds.find(kind);
      if (k == kKinds.end()) {
        v.structure.push_back(where + ": unknown kind '" + kind + "'");
        continue;
      }
      v.kinds.push_back(kind);
      std::vector<std::string> errs;
      const Schema top{{"apiVersion", {T::str, true}},
                       {"kind", {T::str, true}},
                       {"metadata", {T::map, true, &kMetadata}},
                       {"spec", {T::map, true, k->second.spec}}};
      const std::string here = where + " " + kind;
      check(doc, top, here, errs);
      const auto api = opt<std::string>(doc["apiVersion"]).value_or("");
      if (api != k->second.api_version)
        errs.push_back(here + ".apiVersion: '" + api + "', expected '" + k->second.api_version + "'");
      if (!errs.empty()) {
        v.structure.insert(v.structure.end(), errs.begin(), errs.end());
        continue;
      }
      if (kind == "Deployment") {
        v.deployments.push_back(read_deployment(doc));
      } else if (kind == "Service") {
        ++v.services;
        Service s;
        s.name = at(doc, {"metadata", "name"}).as<std::string>();
        s.selector = str_map(at(doc, {"spec", "selector"}));
        const auto& port = doc["spec"]["ports"][0];
        s.port = opt<int>(port["port"]).value_or(0);
        s.target = opt<std::string>(port["targetPort"]).value_or(std::to_string(s.port));
        v.service_defs.push_back(std::move(s));
      } else {
        Pdb p;
        p.name = at(doc, {"metadata", "name"}).as<std::string>();
        p.selector = str_map(at(doc, {"spec", "selector", "matchLabels"}));
        p.has_budget = at(doc, {"spec", "minAvailable"}) || at(doc, {"spec", "maxUnavailable"});
        p.min_available = opt<std::string>(at(doc, {"spec", "minAvailable"}));
        p.max_unavailable = opt<std::string>(at(doc, {"spec", "maxUnavailable"}));
        v.pdbs.push_back(std::move(p));
      }
    }
  }
  return v;
}

}  // namespace k8s
