#include "sim.hpp"

#include <fcntl.h>
#include <httplib.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "k8s/manifest.hpp"
#include "testkit/net.hpp"
#include "testkit/process.hpp"
#include "testkit/redis.hpp"

namespace k8s {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kClusterIp = "10.96.0.10";
constexpr const char* kOldPodIp = "10.244.0.11";
constexpr const char* kNewPodIp = "10.244.0.12";

// The one place that knows which build output a manifest's server is:
// image (without tag) + the binary under /usr/local/bin/ -> chapter dir + file.
struct PodProgram {
  std::string protocol;  // "http" or "grpc"
  std::string path;
};
std::optional<PodProgram> pod_program(const SimPrograms& p, const Container& c) {
  const std::string image = c.image.substr(0, c.image.find(':'));
  static const std::map<std::string, std::pair<std::string, std::string>> table{
      // docs:begin pod-binaries
      {"gs-http/010-naive-exit", {"http", "010-naive-exit"}},
      {"gs-http/050-drain-first", {"http", "050-drain-first"}},
      {"gs-grpc/010-naive-exit", {"grpc", "010-naive-exit"}},
      {"gs-grpc/060-connection-age", {"grpc", "060-connection-age"}},
      // docs:end pod-binaries
  };
  auto it = table.find(image + "/" + c.binary());
  if (it == table.end()) return std::nullopt;
  const auto& [protocol, file] = it->second;
  return PodProgram{protocol, (protocol == "http" ? p.http_dir : p.grpc_dir) + "/" + file};
}

// haproxy's runtime API: one command per connection.
std::string admin(const std::string& sock, const std::string& cmd) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("haproxy runtime API unreachable at " + sock);
  }
  const std::string line = cmd + "\n";
  (void)!::write(fd, line.data(), line.size());
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return out;
}

std::string tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"})
    if (::access((dir + name).c_str(), X_OK) == 0) return dir + name;
  throw std::runtime_error(name + " not found (scripts/install-deps installs it)");
}

// Everything a running simulation owns, for abort_simulations().
std::mutex g_mu;
std::set<pid_t> g_pids;
std::set<std::string> g_namespaces;

void run_checked(const std::vector<std::string>& argv) {
  auto done = testkit::run_to_exit(argv, testkit::scaled(milliseconds(10'000)));
  if (!done.status.ok()) throw std::runtime_error("failed: " + done.transcript);
}

// A process the simulation started: registered for abort_simulations().
class Child {
 public:
  explicit Child(std::vector<std::string> argv, testkit::SpawnOptions options = {})
      : p_(std::make_unique<testkit::Process>(std::move(argv), std::move(options))) {
    std::lock_guard lock(g_mu);
    g_pids.insert(p_->pid());
  }
  ~Child() {
    std::lock_guard lock(g_mu);
    g_pids.erase(p_->pid());
  }
  testkit::Process& operator*() { return *p_; }
  testkit::Process* operator->() { return p_.get(); }

 private:
  std::unique_ptr<testkit::Process> p_;
};

// docs:begin netns
// The cluster network: one namespace, the ClusterIP and the pod addresses on
// its loopback (they exist nowhere else), an nftables nat table whose output
// chain DNATs the Service's address to its endpoints, as kube-proxy's
// iptables and nftables modes do.
class Netns {
 public:
  Netns() : name_("gs-k8s-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++)) {
    run_checked({tool("ip"), "netns", "add", name_});
    {
      std::lock_guard lock(g_mu);
      g_namespaces.insert(name_);
    }
    run_checked({tool("ip"), "-n", name_, "link", "set", "lo", "up"});
    for (const char* ip : {kClusterIp, kOldPodIp, kNewPodIp})
      run_checked({tool("ip"), "-n", name_, "addr", "add", std::string(ip) + "/32", "dev", "lo"});
    nft("table ip kube-proxy {\n  chain services {\n    type nat hook output priority -100;\n  }\n}\n");
  }
  ~Netns() {
    auto done = testkit::run_to_exit({tool("ip"), "netns", "del", name_});
    std::lock_guard lock(g_mu);
    g_namespaces.erase(name_);
  }
  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;
  const std::string& name() const { return name_; }

  // Puts the calling thread into the namespace: its sockets and the
  // processes it starts live there.
  void enter() const {
    const int fd = ::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::setns(fd, CLONE_NEWNET) != 0) {
      const std::string why = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      throw std::runtime_error("setns " + name_ + ": " + why);
    }
    ::close(fd);
  }

  // One nft script, applied atomically. `inside`: the calling thread has
  // entered the namespace (faster than ip netns exec, which remounts /sys).
  void nft(const std::string& script, bool inside = false) {
    const auto file = fs::temp_directory_path() / (name_ + "-" + std::to_string(++counter_) + ".nft");
    std::ofstream(file) << script;
    if (inside)
      run_checked({tool("nft"), "-f", file.string()});
    else
      run_checked({tool("ip"), "netns", "exec", name_, tool("nft"), "-f", file.string()});
    fs::remove(file);
  }

 private:
  static inline std::atomic<int> counter_{0};
  std::string name_;
};

// kube-proxy's choice (KEP-1669): the ready endpoints; if none is ready,
// the terminating ones that still serve. One DNAT rule for the Service.
struct Endpoint {
  std::string ip;
  bool ready = false, serving = false, terminating = false;
};
std::string service_rule(int port, int target, const std::vector<Endpoint>& eps) {
  std::vector<std::string> pick;
  for (const auto& e : eps)
    if (e.ready) pick.push_back(e.ip);
  if (pick.empty())
    for (const auto& e : eps)
      if (e.serving && e.terminating) pick.push_back(e.ip);
  std::ostringstream r;
  r << "flush chain ip kube-proxy services\n";
  const std::string match = "add rule ip kube-proxy services ip daddr " + std::string(kClusterIp) +
                            " tcp dport " + std::to_string(port);
  if (pick.empty()) {
    r << match << " reject with tcp reset\n";  // no endpoints: kube-proxy rejects
  } else if (pick.size() == 1) {
    r << match << " dnat to " << pick[0] << ":" << target << "\n";
  } else {
    r << match << " dnat ip to numgen random mod " << pick.size() << " map { ";
    for (std::size_t i = 0; i < pick.size(); ++i)
      r << (i ? ", " : "") << i << " : " << pick[i] << " . " << target;
    r << " }\n";
  }
  return r.str();
}
// docs:end netns

class Sim {
 public:
  Sim(const SimOptions& o, Netns& ns) : o_(o), ns_(ns), start_(Clock::now()) {}
  SimResult run();

 private:
  milliseconds real(double manifest_ms) const {
    return milliseconds(static_cast<long long>(manifest_ms * o_.ms_per_s / 1000.0));
  }
  // A timeline line, at `at` (now, unless the moment is known only later).
  void event(const std::string& what, Clock::time_point at = Clock::now()) {
    const double t = since_start_s(at);
    char buf[32];
    std::snprintf(buf, sizeof buf, "t=%5.1fs ", t);
    std::lock_guard lock(mu_);
    result_.timeline.push_back(buf + what);
    timeline_at_.push_back(t);
  }
  std::unique_ptr<Child> start_pod(const std::string& ip);
  bool probe_ready(const std::string& ip);
  void set_endpoint(const std::string& ip, bool ready, bool serving, bool terminating, const std::string& what);
  void http_client(const std::string& host, int port, const std::string& prefix);
  void record(const std::string& id, const std::string& why, std::optional<Clock::time_point> sent = std::nullopt,
              std::optional<Clock::time_point> done = std::nullopt, const std::string& pod = "");
  double since_start_s(Clock::time_point t) const {
    return std::chrono::duration<double>(t - start_).count() * 1000.0 / o_.ms_per_s;
  }

  SimOptions o_;
  Netns& ns_;
  Clock::time_point start_;
  Container c_;
  PodProgram program_;
  std::optional<Probe> probe_;
  int grace_s_ = 30, svc_port_ = 0, pod_port_ = 0;
  std::string redis_;
  std::mutex mu_;
  SimResult result_;
  std::vector<double> timeline_at_;  // the exact moment of each timeline line
  std::vector<Endpoint> endpoints_;
  std::atomic<bool> stop_load_{false};
};

std::unique_ptr<Child> Sim::start_pod(const std::string& ip) {
  // docs:begin pod
  std::vector<std::string> argv{tool("ip"), "netns", "exec", ns_.name(), program_.path};
  for (std::size_t i = 0; i < c_.args.size(); ++i) {
    const auto& a = c_.args[i];
    argv.push_back(a);
    if (i + 1 >= c_.args.size()) break;
    if (a == "--listen") {
      argv.push_back(ip), ++i;  // the pod's own address
    } else if (a == "--redis") {
      argv.push_back(redis_), ++i;  // the Service name, resolved
    } else if (a.size() > 3 && a.substr(a.size() - 3) == "-ms") {
      argv.push_back(std::to_string(real(std::stod(c_.args[i + 1])).count())), ++i;  // scaled time
    }
  }
  // docs:end pod
  return std::make_unique<Child>(argv);
}

bool Sim::probe_ready(const std::string& ip) {
  if (program_.protocol == "grpc") {
    Child probe({o_.programs.caller, "--probe", ip + ":" + std::to_string(pod_port_)});
    auto st = probe->wait_exit(testkit::scaled(milliseconds(5000)));
    return st && st->ok();
  }
  httplib::Client cli(ip, pod_port_);
  cli.set_connection_timeout(real(1000));
  cli.set_read_timeout(real(1000));
  auto res = cli.Get(probe_->path.c_str());
  return res && res->status >= 200 && res->status < 400;
}

// The EndpointSlice changes, as kube-proxy applies them (callers sleep the
// lag first).
void Sim::set_endpoint(const std::string& ip, bool ready, bool serving, bool terminating, const std::string& what) {
  std::lock_guard lock(mu_);
  bool found = false;
  for (auto& e : endpoints_)
    if (e.ip == ip) e = {ip, ready, serving, terminating}, found = true;
  if (!found) endpoints_.push_back({ip, ready, serving, terminating});
  ns_.nft(service_rule(svc_port_, pod_port_, endpoints_), true);
  const double t = std::chrono::duration<double>(Clock::now() - start_).count() * 1000.0 / o_.ms_per_s;
  char buf[32];
  std::snprintf(buf, sizeof buf, "t=%5.1fs ", t);
  result_.timeline.push_back(buf + what);
  timeline_at_.push_back(t);
}

void Sim::record(const std::string& id, const std::string& why, std::optional<Clock::time_point> sent,
                 std::optional<Clock::time_point> done, const std::string& pod) {
  const auto ended = done.value_or(Clock::now());
  std::lock_guard lock(mu_);
  if (sent) result_.requests.push_back({since_start_s(*sent), since_start_s(ended), id, why, pod});
  ++result_.sent;
  if (why.empty()) {
    ++result_.ok;
    result_.acked.insert(id);
  } else {
    result_.dropped.push_back(id + ": " + why);
    ++result_.symptoms[why];
  }
}

// docs:begin http-client
// One keep-alive connection, kept as long as the server allows: a new one
// only after "Connection: close" or an error (httplib reconnects then).
void Sim::http_client(const std::string& host, int port, const std::string& prefix) {
  ns_.enter();
  httplib::Client cli(host, port);
  cli.set_keep_alive(true);
  cli.set_connection_timeout(real(1000));
  cli.set_read_timeout(real(10'000));
  for (int n = 0; !stop_load_; ++n) {
    const std::string id = prefix + std::to_string(n);
    const auto sent = Clock::now();
    auto res = cli.Post(("/incr?id=" + id).c_str(), "", "text/plain");
    std::string why;
    if (!res) {
      why = httplib::to_string(res.error());
    } else if (res->status != 200 || res->body.find("id=" + id) == std::string::npos) {
      why = "HTTP " + std::to_string(res->status);
    }
    record(id, why, sent);
    std::this_thread::sleep_for(milliseconds(20));
  }
}
// docs:end http-client

SimResult Sim::run() {
  const auto variant = load_variant(o_.variant_dir);
  if (!variant.structure.empty()) throw std::runtime_error(o_.variant_dir + ": not a valid variant (run k8s-validate)");
  const Deployment* d = nullptr;
  for (const auto& dep : variant.deployments)
    if (dep.name == o_.deployment) d = &dep;
  if (d == nullptr) throw std::runtime_error(o_.variant_dir + ": no Deployment " + o_.deployment);
  const Service* svc = nullptr;
  for (const auto& s : variant.service_defs)
    if (!s.selector.empty() && s.selector == d->pod_labels) svc = &s;
  if (svc == nullptr) throw std::runtime_error(o_.variant_dir + ": no Service selects " + o_.deployment);
  c_ = d->containers.at(0);
  probe_ = c_.readiness;
  grace_s_ = d->grace_s.value_or(30);
  svc_port_ = svc->port;
  pod_port_ = std::stoi(arg_value(c_.args, "--port").value_or("0"));
  if (std::to_string(pod_port_) != svc->target) throw std::runtime_error("targetPort must be the --port number");
  const auto program = pod_program(o_.programs, c_);
  if (!program) throw std::runtime_error("no program for " + c_.image + " " + c_.binary());
  program_ = *program;
  result_.variant = variant.name;
  result_.deployment = d->name;
  result_.protocol = program_.protocol;
  if (!fs::exists(program_.path)) throw std::runtime_error("no server " + program_.path);

  ns_.enter();  // this thread and everything it starts: inside the cluster network
  testkit::RedisServer redis_server;
  redis_ = redis_server.address();
  testkit::RedisClient redis("127.0.0.1", redis_server.port());

  // The ingress (HTTP): haproxy health-checking /readyz of both pod
  // addresses, scaled like everything else.
  std::unique_ptr<Child> haproxy;
  int ingress_port = 0;
  char tmpl[] = "/tmp/k8s-sim-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{tmpl};
  if (program_.protocol == "http") {
    ingress_port = testkit::free_port();
    const int period = static_cast<int>(real(1000.0 * (probe_ ? probe_->period_s : 1)).count());
    std::ofstream cfg(cleanup.dir / "haproxy.cfg");
    // docs:begin ingress
    cfg << "global\n  maxconn 2000\n  stats socket " << (cleanup.dir / "admin.sock").string() << " level admin\n"
        << "defaults\n  mode http\n  retries 0\n  timeout connect " << real(1000).count() << "ms\n"
        << "  timeout client " << real(30'000).count() << "ms\n  timeout server " << real(30'000).count() << "ms\n"
        << "frontend ingress\n  bind 127.0.0.1:" << ingress_port << "\n  default_backend pods\n"
        << "backend pods\n  option httpchk GET /readyz\n"
        // haproxy's defaults (fall 3, rise 2): one slow check on a loaded
        // machine must not take both pods out; 3 periods fit in the drain.
        << "  default-server check inter " << std::max(period, 10) << "ms fall 3 rise 2\n"
        << "  server old " << kOldPodIp << ":" << pod_port_ << "\n"
        // The new pod's address joins when its endpoint does, as an ingress
        // controller following EndpointSlices adds it.
        << "  server new " << kNewPodIp << ":" << pod_port_ << " disabled\n";
    // docs:end ingress
  }

  // The old pod, serving before the load starts.
  auto old_pod = start_pod(kOldPodIp);
  const std::string old_ready = (*old_pod)->expect_line("ready", testkit::scaled(milliseconds(5000)));
  const auto pid_at = old_ready.find("pid=");
  const std::string old_pid = pid_at == std::string::npos ? "" : old_ready.substr(pid_at + 4);
  set_endpoint(kOldPodIp, true, true, false, "old pod Ready, in the Service");
  if (program_.protocol == "http") {
    haproxy = std::make_unique<Child>(
        std::vector<std::string>{o_.programs.haproxy, "-db", "-f", (cleanup.dir / "haproxy.cfg").string()});
    // Ready once its first health check has put the old pod in rotation.
    for (auto until = Clock::now() + testkit::scaled(milliseconds(5000));;) {
      if (testkit::port_accepts(ingress_port)) {
        httplib::Client cli("127.0.0.1", ingress_port);
        if (auto res = cli.Get("/readyz"); res && res->status == 200) break;
      }
      if (Clock::now() > until) throw std::runtime_error("haproxy did not start:\n" + (*haproxy)->transcript());
      std::this_thread::sleep_for(milliseconds(10));
    }
  }

  // The long-lived clients.
  std::vector<std::thread> clients;
  std::unique_ptr<Child> callers;
  auto stop_clients = [&] {
    stop_load_ = true;
    for (auto& t : clients)
      if (t.joinable()) t.join();
    if (callers && (*callers)->running()) {
      (*callers)->send_signal(SIGTERM);
      (*callers)->expect_exit(testkit::scaled(milliseconds(10'000)));
    }
  };
  std::vector<std::thread> lag_threads;
  auto after_lag = [&](std::function<void()> change) {
    lag_threads.emplace_back([this, change = std::move(change), at = Clock::now() + real(o_.lag_ms)] {
      ns_.enter();
      std::this_thread::sleep_until(at);
      change();
    });
  };
  try {
    if (program_.protocol == "http") {
      for (int i = 0; i < o_.clients; ++i)
        clients.emplace_back([this, i] { http_client(kClusterIp, svc_port_, "s" + std::to_string(i) + "-"); });
      for (int i = 0; i < 2; ++i)
        clients.emplace_back([this, i, ingress_port] {
          http_client("127.0.0.1", ingress_port, "i" + std::to_string(i) + "-");
        });
    } else {
      const auto work = real(200);  // each RPC is in flight 200 manifest ms
      callers = std::make_unique<Child>(std::vector<std::string>{
          o_.programs.caller, "--target", std::string(kClusterIp) + ":" + std::to_string(svc_port_), "--callers",
          std::to_string(o_.clients), "--work-ms", std::to_string(work.count()), "--pause-ms", "20",
          // gRPC's own clock, scaled like the rest: reconnect backoff 1 s to 120 s.
          "--reconnect-backoff-ms", std::to_string(std::max<long long>(1, real(1000).count())),
          "--max-reconnect-backoff-ms", std::to_string(std::max<long long>(1, real(120'000).count()))},
          // And its backup poller (5 s), which is when an idle C-core channel
          // notices a closed connection: the server's Shutdown() waits for it.
          testkit::SpawnOptions{{"GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=" +
                                 std::to_string(std::max<long long>(1, real(5000).count()))},
                                ""});
      (*callers)->expect_line("ready", testkit::scaled(milliseconds(5000)));
    }
    // Every connection has carried requests to the old pod before the rollout.
    const int warm = 5 * o_.clients;
    for (auto until = Clock::now() + testkit::scaled(milliseconds(10'000));;) {
      int ok = 0;
      if (callers) {
        const auto out = (*callers)->out();
        for (std::size_t p = 0; (p = out.find("ok ", p)) != std::string::npos; ++p) ++ok;
      } else {
        std::lock_guard lock(mu_);
        ok = result_.ok;
      }
      if (ok >= warm) break;
      if (Clock::now() > until) throw std::runtime_error("the load never got going through the Service");
      std::this_thread::sleep_for(milliseconds(5));
    }

    // Rollout (maxSurge 1, maxUnavailable 0): the new pod first.
    auto new_pod = start_pod(kNewPodIp);
    event("new pod started");
    if (probe_) {
      std::this_thread::sleep_for(real(probe_->initial_delay_s * 1000.0));
      const auto until = Clock::now() + testkit::scaled(milliseconds(10'000));
      while (!probe_ready(kNewPodIp)) {
        if (Clock::now() > until || !(*new_pod)->running())
          throw std::runtime_error("new pod never Ready:\n" + (*new_pod)->transcript());
        std::this_thread::sleep_for(real(probe_->period_s * 1000.0));
      }
      event("new pod Ready (readinessProbe " + probe_->kind + " answered)");
    } else {
      event("new pod Ready (no readinessProbe: as soon as it runs)");
    }
    after_lag([this, sock = (cleanup.dir / "admin.sock").string(), ingress = haproxy != nullptr] {
      set_endpoint(kNewPodIp, true, true, false, "new pod in the Service (ready)");
      if (ingress) admin(sock, "enable server pods/new");
    });
    if (d->min_ready_s > 0) {
      std::this_thread::sleep_for(real(1000.0 * d->min_ready_s));
      event("new pod Available (Ready for minReadySeconds " + std::to_string(d->min_ready_s) + ")");
    }

    // docs:begin kubelet
    // Delete the old pod: the EndpointSlice update and the kubelet start at
    // the same time. The grace period counts from the kubelet's start of the
    // kill and includes the preStop hook.
    const auto deleted = Clock::now();
    const auto window_end = deleted + real(1000.0 * (grace_s_ + o_.margin_s));
    event("old pod deleted");
    const bool probe_drains = probe_.has_value();  // its serving condition follows the probe
    after_lag([this, probe_drains] {
      // ready: false at once; serving: the readiness probe's verdict, which
      // a draining server turns false (503 / NOT_SERVING) soon after its
      // signal; a pod without a probe keeps serving: true until it is gone.
      set_endpoint(kOldPodIp, false, !probe_drains, true,
                   "old pod terminating in the EndpointSlice (ready: false), no new connections");
    });
    const int pre = c_.pre_stop.seconds;
    if (!c_.pre_stop.kind.empty()) {
      event("preStop " + c_.pre_stop.kind + " " + std::to_string(pre) + " s");
      std::this_thread::sleep_until(deleted + real(1000.0 * std::min(pre, grace_s_)));
    }
    (*old_pod)->send_signal(SIGTERM);
    const int left_s = std::max(2, grace_s_ - std::min(pre, grace_s_));
    event("SIGTERM, SIGKILL in " + std::to_string(left_s) + " s");
    // Our own clock, not wait_exit's timeout: the test kit stretches those
    // under sanitizers, the kubelet does not.
    const auto kill_at = Clock::now() + real(1000.0 * left_s);
    while ((*old_pod)->running() && Clock::now() < kill_at) std::this_thread::sleep_for(milliseconds(2));
    std::optional<testkit::ExitStatus> st;
    if (!(*old_pod)->running()) st = (*old_pod)->wait_exit(milliseconds(0));
    if (!st) {
      event("grace period over: SIGKILL");
      st = (*old_pod)->kill();
    }
    // docs:end kubelet
    result_.old_stop_s =
        std::chrono::duration<double>((*old_pod)->exit_time() - deleted).count() * 1000.0 / o_.ms_per_s;
    result_.old_exit = st->str();
    result_.old_graceful = st->ok();
    result_.old_sigkilled = st->killed_by(SIGKILL);
    event("old pod gone: " + result_.old_exit);

    std::this_thread::sleep_until(window_end);
    stop_clients();
    result_.window_s = grace_s_ + o_.margin_s;
    event("load stopped");
    for (auto& t : lag_threads) t.join();
    lag_threads.clear();

    // Acknowledged HTTP writes land --work-ms after their request: wait for
    // every acknowledged id, bounded. gRPC's OK already means persisted.
    if (callers) {
      // When the old pod stopped serving: its GOAWAY at the end of the drain
      // (chapter 03's "drain over" line), or its death if it came first.
      auto stopped = (*old_pod)->exit_time();
      for (const auto& l : (*old_pod)->timed_lines())
        if (l.text.find("drain over") != std::string::npos) {
          stopped = std::min(stopped, l.at);
          break;
        }
      // Which pod each caller's connection led to then: the one that gave
      // its last answer before that moment (a caller changes pod only when
      // its connection ends).
      std::map<std::string, bool> on_old;  // caller -> its last answer came from the old pod
      for (const auto& l : (*callers)->timed_lines()) {
        // "ok ID ms=MS pid=PID" or "fail ID ms=MS CODE: message", printed as
        // the call ended: it started MS milliseconds before the line came.
        std::istringstream in(l.text);
        std::string kind, id, ms, rest;
        in >> kind >> id >> ms;
        std::getline(in >> std::ws, rest);
        if ((kind != "ok" && kind != "fail") || ms.rfind("ms=", 0) != 0) continue;
        const auto sent = l.at - milliseconds(std::stoll(ms.substr(3)));
        if (kind == "ok") {
          const bool old = rest == "pid=" + old_pid;
          record(id, "", sent, l.at, old ? "old" : "new");
          if (l.at < stopped) on_old[id.substr(0, id.find('-'))] = old;
        } else {
          record(id, rest, sent, l.at);
        }
      }
      result_.callers_on_old = 0;
      for (const auto& [caller, old] : on_old) result_.callers_on_old += old ? 1 : 0;
      event(std::string("old pod stops serving (") + (stopped == (*old_pod)->exit_time() ? "gone" : "GOAWAY") +
                "): " + std::to_string(result_.callers_on_old) + " of " + std::to_string(o_.clients) +
                " callers still connected to it",
            stopped);
    }
    const std::string key = program_.protocol == "http" ? "incr:ids" : "work:done";
    const double work_ms = std::stod(arg_value(c_.args, "--work-ms").value_or("0"));
    const auto until = Clock::now() + real(work_ms) + testkit::scaled(milliseconds(2000));
    for (;;) {
      result_.persisted = redis.smembers(key);
      bool all = true;
      for (const auto& id : result_.acked) all = all && result_.persisted.count(id);
      if (all || Clock::now() > until) break;
      std::this_thread::sleep_for(milliseconds(20));
    }
    for (const auto& id : result_.acked)
      if (!result_.persisted.count(id)) result_.lost.insert(id);
    (*new_pod)->kill();
  } catch (...) {
    stop_load_ = true;
    for (auto& t : clients)
      if (t.joinable()) t.join();
    for (auto& t : lag_threads)
      if (t.joinable()) t.join();
    throw;
  }
  if (haproxy) (*haproxy)->kill();
  // Threads record events as they happen, and some only later: print them
  // in the order of their exact moments (two lines can show the same tenth).
  std::vector<std::size_t> order(result_.timeline.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return timeline_at_[a] < timeline_at_[b]; });
  std::vector<std::string> sorted;
  for (std::size_t i : order) sorted.push_back(std::move(result_.timeline[i]));
  result_.timeline = std::move(sorted);
  return result_;
}

}  // namespace

std::string failure_summary(const SimResult& r) {
  int reset = 0, closed = 0, refused = 0, read = 0, http5xx = 0, other = 0;
  for (const auto& [why, n] : r.symptoms) {
    if (why.find("reset by peer") != std::string::npos) reset += n;
    else if (why.find("Socket closed") != std::string::npos) closed += n;
    else if (why.find("refused") != std::string::npos || why.find("establish connection") != std::string::npos) refused += n;
    else if (why.find("Failed to read") != std::string::npos) read += n;
    else if (why.rfind("HTTP 5", 0) == 0) http5xx += n;
    else other += n;
  }
  return "reset by peer " + std::to_string(reset) + ", socket closed " + std::to_string(closed) + ", refused " +
         std::to_string(refused) + ", no response " + std::to_string(read) + ", HTTP 5xx " + std::to_string(http5xx) +
         ", other " + std::to_string(other);
}

// The simulation namespaces that exist now (gs-k8s-PID-N), with the pid of
// the process that made each.
std::vector<std::pair<std::string, pid_t>> simulation_namespaces() {
  std::vector<std::pair<std::string, pid_t>> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("gs-k8s-", 0) != 0) continue;
    found.emplace_back(name, static_cast<pid_t>(std::atol(name.substr(7, name.find('-', 7) - 7).c_str())));
  }
  return found;
}

// Kills whatever lives in the namespace (Redis, pods, probes: every process
// there was started by a simulation) and deletes it.
void kill_and_delete(const std::string& name) {
  try {
    auto listed = testkit::run_to_exit({tool("ip"), "netns", "pids", name});
    std::istringstream in(listed.out);
    for (pid_t pid; in >> pid;)
      if (pid != ::getpid()) ::kill(pid, SIGKILL);
    testkit::run_to_exit({tool("ip"), "netns", "del", name});
  } catch (...) {
  }
}

// A simulation killed by SIGKILL (a test's timeout, the machine shutting
// the job down) cannot delete its namespace. Namespaces are named after the
// pid of the process that made them: delete those whose process is gone,
// with anything still running inside them (silently: transcripts of the
// tour must not depend on what an earlier run left behind).
void remove_stale_namespaces() {
  for (const auto& [name, owner] : simulation_namespaces())
    if (owner > 0 && owner != ::getpid() && ::kill(owner, 0) != 0 && errno == ESRCH) kill_and_delete(name);
}

std::string netns_unavailable() {
  if (::geteuid() != 0) return "network namespaces need root (ip netns add)";
  try {
    tool("ip");
    tool("nft");
    static std::once_flag swept;
    std::call_once(swept, remove_stale_namespaces);
    Netns probe;
  } catch (const std::exception& e) {
    return std::string("cannot create a network namespace with nftables: ") + e.what();
  }
  return "";
}

SimResult simulate(const SimOptions& options) {
  Netns ns;
  // The simulation runs on a thread of its own that enters the namespace;
  // this thread, and the caller's, stay where they were.
  SimResult result;
  std::exception_ptr error;
  std::thread([&] {
    try {
      result = Sim(options, ns).run();
    } catch (...) {
      error = std::current_exception();
    }
  }).join();
  if (error) std::rethrow_exception(error);
  return result;
}

void abort_simulations() {
  std::set<pid_t> pids;
  std::set<std::string> namespaces;
  {
    std::lock_guard lock(g_mu);
    pids = g_pids;
    namespaces = g_namespaces;
  }
  for (pid_t pid : pids) ::kill(pid, SIGKILL);
  // A namespace still being set up is not registered yet: take every one
  // named after this process (what escapes even this, made in the instant
  // before the exit, the next run removes: remove_stale_namespaces()).
  for (const auto& [name, owner] : simulation_namespaces())
    if (owner == ::getpid()) namespaces.insert(name);
  for (const auto& name : namespaces) kill_and_delete(name);
}

}  // namespace k8s
