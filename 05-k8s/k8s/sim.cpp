#include "sim.hpp"

#include <httplib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "k8s/manifest.hpp"
#include "testkit/net.hpp"
#include "testkit/process.hpp"
#include "testkit/redis.hpp"

namespace k8s {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

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

struct Pod {
  std::string name;
  int port = 0;
  std::unique_ptr<testkit::Process> process;
};

class Sim {
 public:
  explicit Sim(const SimOptions& o) : o_(o), start_(Clock::now()) {}
  SimResult run();

 private:
  milliseconds real(double manifest_ms) const {
    return milliseconds(static_cast<long long>(manifest_ms * o_.ms_per_s / 1000.0));
  }
  void event(const std::string& what) {
    const double t = std::chrono::duration<double>(Clock::now() - start_).count() * 1000.0 / o_.ms_per_s;
    char buf[32];
    std::snprintf(buf, sizeof buf, "t=%5.1fs ", t);
    std::lock_guard lock(mu_);
    result_.timeline.push_back(buf + what);
  }
  Pod start_pod(const std::string& name);
  bool probe_ready(const Pod& pod);
  void load();

  SimOptions o_;
  Clock::time_point start_;
  Container c_;
  int grace_s_ = 30;
  std::string sock_;
  int fe_port_ = 0;
  std::mutex mu_;
  SimResult result_;
  std::atomic<int> sent_{0};
};

Pod Sim::start_pod(const std::string& name) {
  Pod pod{name, testkit::free_port(), nullptr};
  std::vector<std::string> argv{o_.server_dir + "/" + c_.binary()};
  for (std::size_t i = 0; i < c_.args.size(); ++i) {
    const auto& a = c_.args[i];
    argv.push_back(a);
    if (i + 1 >= c_.args.size()) break;
    if (a == "--port") {
      argv.push_back(std::to_string(pod.port)), ++i;  // the pod's own address
    } else if (a == "--redis") {
      argv.push_back(o_.redis), ++i;  // the Service name, resolved
    } else if (a.size() > 3 && a.substr(a.size() - 3) == "-ms") {
      argv.push_back(std::to_string(real(std::stod(c_.args[i + 1])).count())), ++i;  // scaled time
    }
  }
  pod.process = std::make_unique<testkit::Process>(argv);
  return pod;
}

bool Sim::probe_ready(const Pod& pod) {
  httplib::Client cli("127.0.0.1", pod.port);
  cli.set_connection_timeout(std::chrono::milliseconds(200));
  cli.set_read_timeout(std::chrono::seconds(1));
  auto res = cli.Get(c_.readiness->path.c_str());
  return res && res->status >= 200 && res->status < 400;
}

void Sim::load() {
  const auto t0 = Clock::now();
  for (int i = 0; i < o_.requests; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::microseconds(1'000'000LL * i / o_.rate));
    char id[16];
    std::snprintf(id, sizeof id, "r%03d", i);
    httplib::Client cli("127.0.0.1", fe_port_);
    cli.set_keep_alive(false);
    cli.set_connection_timeout(std::chrono::seconds(1));
    cli.set_read_timeout(std::chrono::seconds(2));
    auto res = cli.Get(("/incr?id=" + std::string(id)).c_str());
    std::string why;
    if (!res) {
      why = "connection closed by the Service, no response (" + httplib::to_string(res.error()) + ")";
    } else if (res->status != 200 || res->body.find(std::string("id=") + id) == std::string::npos) {
      why = "HTTP " + std::to_string(res->status);
    }
    {
      std::lock_guard lock(mu_);
      if (why.empty()) {
        ++result_.ok;
        result_.acked.insert(id);
      } else {
        result_.dropped.push_back(std::string(id) + ": " + why);
      }
    }
    sent_.store(i + 1);
  }
}

SimResult Sim::run() {
  const auto variant = load_variant(o_.variant_dir);
  if (!variant.structure.empty() || variant.deployments.empty())
    throw std::runtime_error(o_.variant_dir + ": not a valid variant (run k8s-validate)");
  const auto& d = variant.deployments[0];
  c_ = d.containers.at(0);
  grace_s_ = d.grace_s.value_or(30);
  result_.variant = variant.name;
  if (!fs::exists(o_.server_dir + "/" + c_.binary()))
    throw std::runtime_error("no server " + o_.server_dir + "/" + c_.binary());

  // Redis: start from nothing.
  const auto colon = o_.redis.rfind(':');
  testkit::RedisClient redis(o_.redis.substr(0, colon), std::stoi(o_.redis.substr(colon + 1)));
  redis.command({"DEL", "incr:ids", "incr:counter"});

  // The Service.
  char tmpl[] = "/tmp/k8s-sim-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
  const fs::path dir = tmpl;
  sock_ = (dir / "admin.sock").string();
  fe_port_ = testkit::free_port();
  {
    std::ofstream cfg(dir / "haproxy.cfg");
    cfg << "global\n  stats socket " << sock_ << " level admin\n  maxconn 2000\n"
        << "defaults\n  mode tcp\n  retries 0\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n"
        << "frontend service\n  bind 127.0.0.1:" << fe_port_ << "\n  default_backend endpoints\n"
        << "backend endpoints\n  balance roundrobin\n";
  }
  testkit::Process haproxy({o_.haproxy, "-db", "-f", (dir / "haproxy.cfg").string()});
  struct Cleanup {
    fs::path dir;
    ~Cleanup() { fs::remove_all(dir); }
  } cleanup{dir};
  for (auto until = Clock::now() + testkit::scaled(milliseconds(5000));;) {
    if (fs::exists(sock_) && testkit::port_accepts(fe_port_)) break;
    if (Clock::now() > until) throw std::runtime_error("haproxy did not start:\n" + haproxy.transcript());
    std::this_thread::sleep_for(milliseconds(10));
  }
  auto add_endpoint = [&](const Pod& pod) {
    admin(sock_, "add server endpoints/" + pod.name + " 127.0.0.1:" + std::to_string(pod.port));
    const auto out = admin(sock_, "enable server endpoints/" + pod.name);
    if (!out.empty() && out != "\n") throw std::runtime_error("haproxy: " + out);
  };

  // The old pod, serving before the load starts.
  Pod old_pod = start_pod("old");
  old_pod.process->expect_line("ready", testkit::scaled(milliseconds(5000)));
  add_endpoint(old_pod);
  event("old pod Ready, in the Service");

  std::thread loader([this] { load(); });
  std::thread lag_thread;
  Pod new_pod;
  try {
    while (sent_.load() < o_.roll_after) std::this_thread::sleep_for(milliseconds(2));

    // Rollout (maxSurge 1, maxUnavailable 0): the new pod first.
    new_pod = start_pod("new");
    event("new pod started");
    if (c_.readiness) {
      std::this_thread::sleep_for(real(c_.readiness->initial_delay_s * 1000.0));
      const auto until = Clock::now() + testkit::scaled(milliseconds(10'000));
      while (!probe_ready(new_pod)) {
        if (Clock::now() > until || !new_pod.process->running())
          throw std::runtime_error("new pod never Ready:\n" + new_pod.process->transcript());
        std::this_thread::sleep_for(real(c_.readiness->period_s * 1000.0));
      }
      event("new pod Ready (" + c_.readiness->path + " answered)");
    } else {
      event("new pod Ready (no readinessProbe: as soon as it runs)");
    }
    std::this_thread::sleep_for(real(o_.lag_ms));
    add_endpoint(new_pod);
    event("new pod in the Service");

    // Delete the old pod: endpoint removal and kubelet run in parallel.
    const auto deleted = Clock::now();
    event("old pod deleted");
    lag_thread = std::thread([&, deleted] {
      std::this_thread::sleep_until(deleted + real(o_.lag_ms));
      admin(sock_, "disable server endpoints/old");
      event("old pod out of the Service");
    });
    const int pre = c_.pre_stop.seconds;
    if (!c_.pre_stop.kind.empty()) {
      event("preStop " + c_.pre_stop.kind + " " + std::to_string(pre) + " s");
      std::this_thread::sleep_until(deleted + real(1000.0 * std::min(pre, grace_s_)));
    }
    old_pod.process->send_signal(SIGTERM);
    const int left_s = std::max(2, grace_s_ - std::min(pre, grace_s_));
    event("SIGTERM, SIGKILL in " + std::to_string(left_s) + " s");
    // Our own clock, not wait_exit's timeout: the test kit stretches those
    // under sanitizers, the kubelet does not.
    const auto kill_at = Clock::now() + real(1000.0 * left_s);
    while (old_pod.process->running() && Clock::now() < kill_at) std::this_thread::sleep_for(milliseconds(2));
    std::optional<testkit::ExitStatus> st;
    if (!old_pod.process->running()) st = old_pod.process->wait_exit(milliseconds(0));
    if (!st) {
      event("grace period over: SIGKILL");
      st = old_pod.process->kill();
    }
    result_.old_stop_s = std::chrono::duration<double>(old_pod.process->exit_time() - deleted).count() * 1000.0 /
                         o_.ms_per_s;
    result_.old_exit = st->str();
    result_.old_graceful = st->ok();
    result_.old_sigkilled = st->killed_by(SIGKILL);
    event("old pod gone: " + result_.old_exit);
  } catch (...) {
    loader.join();
    if (lag_thread.joinable()) lag_thread.join();
    throw;
  }
  loader.join();
  lag_thread.join();
  result_.sent = sent_.load();

  // The new pod's last writes land --work-ms after their request: wait for
  // every acknowledged id, bounded.
  const double work_ms = std::stod(arg_value(c_.args, "--work-ms").value_or("5000"));
  const auto until = Clock::now() + real(work_ms) + testkit::scaled(milliseconds(1000));
  for (;;) {
    result_.persisted = redis.smembers("incr:ids");
    bool all = true;
    for (const auto& id : result_.acked) all = all && result_.persisted.count(id);
    if (all || Clock::now() > until) break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  for (const auto& id : result_.acked)
    if (!result_.persisted.count(id)) result_.lost.insert(id);
  new_pod.process->kill();
  haproxy.kill();
  return result_;
}

}  // namespace

SimResult simulate(const SimOptions& options) { return Sim(options).run(); }

}  // namespace k8s
