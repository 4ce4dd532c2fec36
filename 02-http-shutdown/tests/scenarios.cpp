#include "scenarios.hpp"
#include "testkit/stage.hpp"

#include <dirent.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

namespace ch02 {

using namespace std::chrono_literals;
using testkit::Clock;
using testkit::scaled;

const std::vector<std::string> kStages = {"010-naive-exit",        "020-stop-on-signal",         "030-track-background-work",
                                          "033-second-signal",     "036-hard-deadline",          "040-shutdown-deadline",
                                          "045-close-idle-connections", "050-drain-first"};

std::string stage(const std::string& name) { return testkit::stage_binary(CHAPTER_BIN_DIR, name); }
bool second_signal_forces_exit(const std::string& name) { return name >= "033"; }
bool has_deadline(const std::string& name) { return name >= "036"; }
bool cancels(const std::string& name) { return name >= "040"; }
bool closes_idle(const std::string& name) { return name >= "045"; }
bool drains_first(const std::string& name) { return name >= "050"; }

namespace {

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
}

bool has_flag(const std::vector<std::string>& args, const std::string& flag) {
  for (const auto& a : args)
    if (a == flag) return true;
  return false;
}

Http to_http(httplib::Result& res, Clock::time_point t0, milliseconds timeout) {
  Http h;
  if (res) {
    h.status = res->status;
    h.connection = res->get_header_value("Connection");
    h.body = res->body;
    return h;
  }
  switch (res.error()) {
    case httplib::Error::Connection: h.error = "refused"; break;
    case httplib::Error::ConnectionTimeout: h.error = "timeout"; break;
    case httplib::Error::Read:
    case httplib::Error::Write: h.error = Clock::now() - t0 >= timeout - 50ms ? "timeout" : "reset"; break;
    default: h.error = httplib::to_string(res.error());
  }
  return h;
}

void configure(httplib::Client& c, milliseconds timeout) {
  c.set_connection_timeout(timeout);
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
}

// Waits for the exit within `bound`; SIGKILLs a stage that is still running.
Stop finish(testkit::Process& p, Clock::time_point signalled, milliseconds bound) {
  Stop s;
  s.status = p.wait_exit(bound);
  if (s.status) {
    s.stop_ms = std::chrono::duration_cast<milliseconds>(p.exit_time() - signalled).count();
  } else {
    p.kill();
  }
  s.transcript = p.transcript();
  return s;
}

// Whether a thread of `pid` is blocked where cpp-httplib 0.11's own
// connection loop (010-040) waits for the next request on a keep-alive
// connection: its keep_alive() polls the one socket in rounds of
// poll(fds, 1, 10 ms) (a 1 ms sleep between rounds), and nothing else in
// these stages polls with that timeout (socket reads and writes use 5 s).
// /proc/PID/task/TID/syscall shows "7 <fds> 0x1 0xa ..." (x86-64: poll).
bool in_keep_alive_wait(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return false;
  bool found = false;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/syscall");
    std::string nr, fds, nfds, timeout;
    if (in >> nr >> fds >> nfds >> timeout && nr == "7" && nfds == "0x1" && timeout == "0xa") found = true;
  }
  ::closedir(d);
  return found;
}

// After a response, the server's connection thread goes back to waiting for
// the next request; a stop() before it gets there closes the connection at
// once. "Idle" means it got there. 045/050 (with --trace) say so for each
// connection: once when it is accepted, once after each response. In
// cpp-httplib's own loop (010-040), the thread is seen blocked in that
// wait's poll() (one keep-alive connection: the response has been read, so
// the thread is past it and waits for the next request).
void let_connection_go_idle(const std::string& name, testkit::Process& p, int responses) {
  if (!closes_idle(name)) {
#if defined(__x86_64__)
    for (auto end = Clock::now() + scaled(5s); !in_keep_alive_wait(p.pid());) {
      if (Clock::now() > end) throw testkit::Failure(name + ": no thread waits for a keep-alive request");
      std::this_thread::sleep_for(1ms);
    }
#else
    std::this_thread::sleep_for(scaled(200ms));  // no poll(2) to look for: a pause
#endif
    return;
  }
  for (int i = 0; i <= responses; ++i) p.expect_line("waiting for a request", 5s);
}

// The budget a graceful stop of these scenarios gets before it counts as
// hanging: drain delay + pending work + a margin, scaled for sanitizers.
milliseconds stop_bound() { return scaled(5000ms); }

}  // namespace

milliseconds lb_lag() { return scaled(1000ms); }

std::string Http::str() const { return status != 0 ? std::to_string(status) : error; }

std::string Stop::str() const { return status ? status->str() : "still running"; }

Running start(const std::string& name, const testkit::RedisServer& redis, std::vector<std::string> extra) {
  std::vector<std::string> argv = {stage(name), "--port", "0", "--redis", redis.address()};
  if (drains_first(name) && !has_flag(extra, "--drain-delay-ms")) extra.insert(extra.end(), {"--drain-delay-ms", std::to_string(lb_lag().count())});
  argv.insert(argv.end(), extra.begin(), extra.end());
  Running r;
  r.process = std::make_unique<testkit::Process>(argv);
  const std::string line = r.process->expect_line("ready port=", 10s);
  r.port = std::atoi(line.c_str() + line.find("ready port=") + 11);
  if (line.rfind("ready port=", 0) != 0 || r.port <= 0) throw testkit::Failure("bad ready line: " + line);
  return r;
}

Http get(int port, const std::string& path, milliseconds timeout) {
  httplib::Client c("127.0.0.1", port);
  configure(c, timeout);
  const auto t0 = Clock::now();
  auto res = c.Get(path.c_str());
  return to_http(res, t0, timeout);
}

Http post(int port, const std::string& path, milliseconds timeout) {
  httplib::Client c("127.0.0.1", port);
  configure(c, timeout);
  const auto t0 = Clock::now();
  auto res = c.Post(path);
  return to_http(res, t0, timeout);
}

struct KeepAlive::Impl {
  Impl(int port, milliseconds t) : client("127.0.0.1", port), timeout(t) {
    client.set_keep_alive(true);
    configure(client, timeout);
  }
  httplib::Client client;
  milliseconds timeout;
};

KeepAlive::KeepAlive(int port, milliseconds timeout) : impl_(std::make_unique<Impl>(port, timeout)) {}
KeepAlive::~KeepAlive() = default;
Http KeepAlive::get(const std::string& path) {
  const auto t0 = Clock::now();
  auto res = impl_->client.Get(path.c_str());
  return to_http(res, t0, impl_->timeout);
}
Http KeepAlive::incr(const std::string& id) {
  const auto t0 = Clock::now();
  auto res = impl_->client.Post("/incr?id=" + id);
  return to_http(res, t0, impl_->timeout);
}
void KeepAlive::close() { impl_->client.stop(); }

PendingWrites sigterm_with_pending_writes(const std::string& name) {
  testkit::RedisServer redis;
  const auto work = scaled(1000ms);
  auto r = start(name, redis, {"--work-ms", std::to_string(work.count())});

  load::Options opts;
  opts.requests = 20;
  opts.rate = 400;
  opts.connections = 4;
  opts.keep_alive = false;  // fresh connections: no idle keep-alive holds the exit (see scenario C)
  opts.signal_after = 15;   // once 15 requests have their 200, their writes are pending
  opts.exit_timeout = stop_bound();
  opts.settle = 0ms;
  opts.redis_port = redis.port();
  load::Target target;
  target.port = r.port;
  target.pid = r.process->pid();
  target.wait_exit = [&](milliseconds t) -> std::optional<std::string> {
    auto st = r.process->wait_exit(t);
    if (!st) return std::nullopt;
    return st->str();
  };
  PendingWrites out;
  out.report = load::run(target, opts);
  out.acked_before_signal = out.report.signalled_after - out.report.errors_before_signal();
  // The checker saw the exit (or gave up); the Process has the status.
  out.stop.status = r.process->wait_exit(0ms);
  if (out.stop.status) {
    out.stop.stop_ms = out.report.shutdown_ms;
  } else {
    r.process->kill();
  }
  out.stop.transcript = r.process->transcript();
  return out;
}

InFlight sigterm_with_request_in_flight(const std::string& name) {
  testkit::RedisServer redis;
  const auto handler = scaled(800ms);
  auto r = start(name, redis, {"--work-ms", "0", "--handler-ms", std::to_string(handler.count()), "--trace"});
  InFlight out;
  std::thread client([&] { out.response = post(r.port, "/incr?id=inflight", scaled(10s)); });
  r.process->expect_line("incr: id=inflight started", 5s);  // the request is inside its handler
  const auto t = r.process->send_signal(SIGTERM);
  out.stop = finish(*r.process, t, stop_bound());
  client.join();
  return out;
}

TrafficFirst stop_taking_traffic(const std::string& name) {
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--trace"});
  TrafficFirst out;
  KeepAlive keep(r.port);
  keep.get("/healthz");
  let_connection_go_idle(name, *r.process, 1);
  const auto t = r.process->send_signal(SIGTERM);
  // What a load balancer that has not yet noticed sees: poll readiness and
  // send work, on fresh connections, until the server refuses them.
  for (int n = 0; ms_since(t) < scaled(5000ms).count(); ++n) {
    // The moment the probe was sent: a probe the dying process had already
    // accepted ends by its own timeout, which says nothing about when the
    // server stopped answering.
    const auto sent_ms = ms_since(t);
    Http ready = get(r.port, "/readyz", 1s);
    if (ready.status == 0) {
      out.refused_after_ms = sent_ms;
      break;
    }
    if (ready.status == 503) out.readiness_503 = true;
    Http work = post(r.port, "/incr?id=late" + std::to_string(n), 1s);
    if (out.readiness_503 && work.ok()) out.served_while_draining = true;
    std::this_thread::sleep_for(10ms);
  }
  if (name != "010-naive-exit") r.process->expect_line("listener closed", 5s);
  // 045/050 closed it (--trace says so, before or after "listener closed").
  for (auto end = Clock::now() + scaled(5s); closes_idle(name);) {
    if (r.process->out().find("closed while idle") != std::string::npos) break;
    if (Clock::now() > end) throw testkit::Failure(name + " never closed the idle connection:\n" + r.process->transcript());
    std::this_thread::sleep_for(2ms);
  }
  out.keep_alive_after_close = keep.get("/healthz");
  keep.close();
  out.stop = finish(*r.process, t, stop_bound());
  return out;
}

Stuck sigterm_with_stuck_handler(const std::string& name) {
  testkit::RedisServer redis;
  Stuck out;
  std::vector<std::string> extra = {"--work-ms", "0", "--handler-ms", "60000", "--trace"};
  if (has_deadline(name)) {
    // 2 s: its last tenth (200 ms) is the handler's time to notice the
    // cancellation; 100 ms failed on a machine with a load average of 19.
    out.deadline_ms = scaled(2000ms).count();
    extra.insert(extra.end(), {"--shutdown-timeout-ms", std::to_string(out.deadline_ms)});
  }
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "100"});
  auto r = start(name, redis, extra);
  std::thread client([&] { post(r.port, "/incr?id=stuck", 70s); });
  r.process->expect_line("incr: id=stuck started", 5s);
  const auto t = r.process->send_signal(SIGTERM);
  // Bound: the deadline (if any) plus a margin.
  const auto bound = milliseconds(out.deadline_ms) + scaled(2000ms);
  out.stop.status = r.process->wait_exit(bound);
  if (!out.stop.status) {
    out.second_signal_sent = true;  // insisting: a bounded stage would exit now
    r.process->send_signal(SIGTERM);
    out.stop.status = r.process->wait_exit(scaled(1000ms));
  }
  if (out.stop.status) {
    out.stop.stop_ms = std::chrono::duration_cast<milliseconds>(r.process->exit_time() - t).count();
  } else {
    r.process->kill();
  }
  client.join();  // the process is gone: the client gets its error
  out.stop.transcript = r.process->transcript();
  const auto err = r.process->err();
  out.cancelled_reported = err.find("cancelled: id=stuck") != std::string::npos;
  out.stuck_reported = out.cancelled_reported || err.find("abandoned: id=stuck") != std::string::npos;
  return out;
}

IdleKeepAlive sigterm_with_idle_keep_alive(const std::string& name) {
  testkit::RedisServer redis;
  std::vector<std::string> extra = {"--work-ms", "0", "--trace"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
  auto r = start(name, redis, extra);
  KeepAlive keep(r.port);
  keep.get("/healthz");
  const auto idle_since = Clock::now();
  let_connection_go_idle(name, *r.process, 1);
  const auto t = r.process->send_signal(SIGTERM);
  IdleKeepAlive out;
  out.stop = finish(*r.process, t, std::max(scaled(5000ms), milliseconds(10'000)));
  if (out.stop.status)
    out.idle_ms = std::chrono::duration_cast<milliseconds>(r.process->exit_time() - idle_since).count();
  return out;
}

namespace {

// How many sockets the process holds (its listener, Redis, connections).
int socket_count(pid_t pid) {
  int n = 0;
  const std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return -1;
  while (const dirent* e = ::readdir(d)) {
    char target[64] = "";
    const auto len = ::readlink((dir + "/" + e->d_name).c_str(), target, sizeof target - 1);
    if (len > 0 && std::string(target, static_cast<std::size_t>(len)).rfind("socket:", 0) == 0) ++n;
  }
  ::closedir(d);
  return n;
}

void wait_sockets(pid_t pid, int at_least, milliseconds timeout) {
  for (auto deadline = Clock::now() + scaled(timeout); socket_count(pid) < at_least;) {
    if (Clock::now() > deadline)
      throw testkit::Failure("precondition failed: the stage never held " + std::to_string(at_least) + " sockets");
    std::this_thread::sleep_for(2ms);
  }
}

// How many connections to `port` have bytes the stage has not read yet
// (established, receive queue non-empty), from /proc/PID/net/tcp.
int unread_connections(pid_t pid, int port) {
  char local_port[8];
  std::snprintf(local_port, sizeof local_port, ":%04X", port);
  std::ifstream tcp("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line;
  int n = 0;
  while (std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string sl, local, remote, st, queues;
    if (!(fields >> sl >> local >> remote >> st >> queues)) continue;
    const auto colon = queues.find(':');
    if (colon == std::string::npos) continue;
    const bool mine = local.size() >= 5 && local.compare(local.size() - 5, 5, local_port) == 0;
    if (mine && st == "01" && std::stoul(queues.substr(colon + 1), nullptr, 16) > 0) ++n;
  }
  return n;
}

}  // namespace

IdleRace race_idle_close(const std::string& name, int rounds, int connections) {
  testkit::RedisServer redis;
  IdleRace out;
  std::set<std::string> answered;
  std::mt19937 rng(12345);
  const auto budget = Clock::now() + scaled(60s);
  for (int round = 0; round < rounds && Clock::now() < budget; ++round) {
    std::vector<std::string> extra = {"--work-ms", "0", "--threads", std::to_string(connections + 2)};
    if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
    auto r = start(name, redis, extra);
    std::vector<std::unique_ptr<KeepAlive>> clients;
    for (int c = 0; c < connections; ++c) {
      clients.push_back(std::make_unique<KeepAlive>(r.port));
      if (!clients.back()->get("/healthz").ok()) throw testkit::Failure("precondition failed: /healthz");
    }
    std::vector<int> delay_us(static_cast<std::size_t>(connections));
    for (auto& d : delay_us) d = std::uniform_int_distribution<int>(0, 4000)(rng);
    std::vector<Http> got(static_cast<std::size_t>(connections));
    const auto t = r.process->send_signal(SIGTERM);
    std::vector<std::thread> senders;
    for (int c = 0; c < connections; ++c)
      senders.emplace_back([&, c] {
        std::this_thread::sleep_until(t + std::chrono::microseconds(delay_us[static_cast<std::size_t>(c)]));
        got[static_cast<std::size_t>(c)] = clients[static_cast<std::size_t>(c)]->incr("e" + std::to_string(round) + "c" + std::to_string(c));
      });
    for (auto& th : senders) th.join();
    for (auto& c : clients) c->close();
    Stop stop = finish(*r.process, t, stop_bound());
    if (!stop.status) throw testkit::Failure("stage did not exit:\n" + stop.transcript);
    out.last_transcript = stop.transcript;
    for (int c = 0; c < connections; ++c) {
      ++out.sent;
      if (got[static_cast<std::size_t>(c)].ok()) answered.insert("e" + std::to_string(round) + "c" + std::to_string(c));
    }
    ++out.rounds;
  }
  out.answered = static_cast<int>(answered.size());
  const auto persisted = redis.client().smembers("incr:ids");
  for (const auto& id : persisted)
    if (answered.count(id) == 0) out.unanswered_ran.push_back(id);
  for (const auto& id : answered)
    if (persisted.count(id) == 0) out.answered_lost.push_back(id);
  return out;
}

Queued sigterm_with_queued_connections(const std::string& name, int threads, int idle, int queued) {
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--threads", std::to_string(threads)});
  const int before = socket_count(r.process->pid());
  std::vector<std::unique_ptr<KeepAlive>> idlers;
  for (int i = 0; i < idle; ++i) {
    idlers.push_back(std::make_unique<KeepAlive>(r.port));
    if (!idlers.back()->get("/healthz").ok()) throw testkit::Failure("precondition failed: /healthz");
  }
  Queued out;
  out.responses.resize(static_cast<std::size_t>(queued));
  std::vector<std::thread> clients;
  for (int i = 0; i < queued; ++i)
    clients.emplace_back([&, i] {
      KeepAlive c(r.port, scaled(15s));
      out.responses[static_cast<std::size_t>(i)] = c.incr("q" + std::to_string(i));
    });
  wait_sockets(r.process->pid(), before + idle + queued, 10s);  // all accepted
  // ... and every queued request has arrived: it waits, unread, in its
  // connection's receive queue (no worker thread has read it yet).
  for (auto deadline = Clock::now() + scaled(10s); unread_connections(r.process->pid(), r.port) < queued;) {
    if (Clock::now() > deadline) throw testkit::Failure("precondition failed: the queued requests never arrived");
    std::this_thread::sleep_for(2ms);
  }
  const auto t = r.process->send_signal(SIGTERM);
  for (auto& th : clients) th.join();
  for (auto& c : idlers) c->close();
  out.stop = finish(*r.process, t, stop_bound() + scaled(6s));
  for (const auto& h : out.responses) out.answered += h.ok() ? 1 : 0;
  const auto persisted = redis.client().smembers("incr:ids");
  out.persisted = static_cast<int>(persisted.size());
  return out;
}

std::optional<std::string> exchange_until_close(int port, const std::string& request, milliseconds timeout) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
    ::close(fd);
    throw testkit::Failure("precondition failed: cannot send a request");
  }
  std::string got;
  for (auto deadline = Clock::now() + scaled(timeout);;) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, POLLIN, 0};
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    char buf[4096];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      ::close(fd);
      return got;  // closed by the server
    }
    got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return std::nullopt;
}

}  // namespace ch02
