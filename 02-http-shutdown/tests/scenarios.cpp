#include "scenarios.hpp"

#include <httplib.h>
#include <signal.h>

#include <thread>

namespace ch02 {

using namespace std::chrono_literals;
using testkit::Clock;
using testkit::scaled;

const std::vector<std::string> kStages = {"010-naive-exit", "020-stop-on-signal", "030-track-background-work",
                                          "040-shutdown-deadline", "050-drain-first"};

std::string stage(const std::string& name) { return std::string(CHAPTER_BIN_DIR) + "/" + name; }
bool has_deadline(const std::string& name) { return name >= "040"; }
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

// After a response, the server's connection thread goes back to waiting for
// the next request; a stop() before it gets there closes the connection at
// once. "Idle" means it got there: nothing observable says so, hence a pause.
void let_connection_go_idle() { std::this_thread::sleep_for(scaled(200ms)); }

// The budget a graceful stop of these scenarios gets before it counts as
// hanging: drain delay + pending work + a margin, scaled for sanitizers.
milliseconds stop_bound() { return scaled(5000ms); }

}  // namespace

std::string Http::str() const { return status != 0 ? std::to_string(status) : error; }

std::string Stop::str() const { return status ? status->str() : "still running"; }

Running start(const std::string& name, const testkit::RedisServer& redis, std::vector<std::string> extra) {
  std::vector<std::string> argv = {stage(name), "--port", "0", "--redis", redis.address()};
  if (drains_first(name) && !has_flag(extra, "--drain-delay-ms")) extra.insert(extra.end(), {"--drain-delay-ms", "200"});
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

struct KeepAlive::Impl {
  explicit Impl(int port) : client("127.0.0.1", port) {
    client.set_keep_alive(true);
    configure(client, 5s);
  }
  httplib::Client client;
};

KeepAlive::KeepAlive(int port) : impl_(std::make_unique<Impl>(port)) {}
KeepAlive::~KeepAlive() = default;
Http KeepAlive::get(const std::string& path) {
  const auto t0 = Clock::now();
  auto res = impl_->client.Get(path.c_str());
  return to_http(res, t0, 5s);
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
  std::thread client([&] { out.response = get(r.port, "/incr?id=inflight", scaled(10s)); });
  r.process->expect_line("incr: id=inflight started", 5s);  // the request is inside its handler
  const auto t = r.process->send_signal(SIGTERM);
  out.stop = finish(*r.process, t, stop_bound());
  client.join();
  return out;
}

TrafficFirst stop_taking_traffic(const std::string& name) {
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0"});
  TrafficFirst out;
  KeepAlive keep(r.port);
  keep.get("/healthz");
  let_connection_go_idle();
  const auto t = r.process->send_signal(SIGTERM);
  // What a load balancer that has not yet noticed sees: poll readiness and
  // send work, on fresh connections, until the server refuses them.
  for (int n = 0; ms_since(t) < scaled(5000ms).count(); ++n) {
    Http ready = get(r.port, "/readyz", 1s);
    if (ready.status == 0) break;
    if (ready.status == 503) out.readiness_503 = true;
    Http work = get(r.port, "/incr?id=late" + std::to_string(n), 1s);
    if (out.readiness_503 && work.ok()) out.served_while_draining = true;
    std::this_thread::sleep_for(10ms);
  }
  if (name != "010-naive-exit") r.process->expect_line("listener closed", 5s);
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
    out.deadline_ms = scaled(1000ms).count();
    extra.insert(extra.end(), {"--shutdown-timeout-ms", std::to_string(out.deadline_ms)});
  }
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "100"});
  auto r = start(name, redis, extra);
  std::thread client([&] { get(r.port, "/incr?id=stuck", 70s); });
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
  out.abandoned_reported = r.process->err().find("abandoned: id=stuck") != std::string::npos;
  return out;
}

IdleKeepAlive sigterm_with_idle_keep_alive(const std::string& name) {
  testkit::RedisServer redis;
  std::vector<std::string> extra = {"--work-ms", "0"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
  auto r = start(name, redis, extra);
  KeepAlive keep(r.port);
  keep.get("/healthz");
  const auto idle_since = Clock::now();
  let_connection_go_idle();
  const auto t = r.process->send_signal(SIGTERM);
  IdleKeepAlive out;
  out.stop = finish(*r.process, t, std::max(scaled(5000ms), milliseconds(10'000)));
  if (out.stop.status)
    out.idle_ms = std::chrono::duration_cast<milliseconds>(r.process->exit_time() - idle_since).count();
  return out;
}

}  // namespace ch02
