#include "scenarios.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <sstream>

namespace grpcstop {

using gs::work::v1::Tick;
using gs::work::v1::TicksRequest;
using gs::work::v1::Worker;
using gs::work::v1::WorkReply;
using gs::work::v1::WorkRequest;
using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

std::string code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "code " + std::to_string(static_cast<int>(code));
  }
}

// ---------------------------------------------------------------- Server

Server::Server(const std::string& binary, const std::string& redis_address, std::vector<std::string> extra_args,
               int port) {
  std::vector<std::string> argv = {binary, "--port", std::to_string(port), "--redis", redis_address};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  process_ = std::make_unique<testkit::Process>(argv);
  std::string ready = process_->expect_line("ready port=", milliseconds(10'000));
  port_ = std::stoi(ready.substr(ready.find("ready port=") + 11));
}

// ---------------------------------------------------------------- channels

// docs:begin service-config
// Round-robin over every address, skip the ones whose health says
// NOT_SERVING (client-side health checking: a Watch on grpc.health.v1), and
// retry UNAVAILABLE on another one.
const char* const kRetryServiceConfig = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""},
  "methodConfig": [{
    "name": [{"service": "gs.work.v1.Worker"}],
    "retryPolicy": {
      "maxAttempts": 5,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
})";
// docs:end service-config

// docs:begin no-retry-config
// The same balancing and health checking, and no retry of any kind: gRPC's
// transparent retries are switched off too (GRPC_ARG_ENABLE_RETRIES 0), so
// every failure of a stopping server reaches the caller.
const char* const kNoRetryServiceConfig = R"({
  "loadBalancingConfig": [{"round_robin": {}}],
  "healthCheckConfig": {"serviceName": ""}
})";
// docs:end no-retry-config

std::shared_ptr<grpc::Channel> channel_to(const std::vector<std::string>& targets,
                                          const std::string& service_config) {
  grpc::ChannelArguments args;
  // A server that restarts should be found again within a fraction of a second.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  if (service_config.find("retryPolicy") == std::string::npos) args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  std::shared_ptr<grpc::Channel> channel;
  if (targets.size() == 1) {
    channel = grpc::CreateCustomChannel(targets[0], grpc::InsecureChannelCredentials(), args);
  } else {
    std::string target = "ipv4:";
    for (std::size_t i = 0; i < targets.size(); ++i) target += (i ? "," : "") + targets[i];
    args.SetServiceConfigJSON(service_config);
    channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
  }
  // Connected before the first call: a first connection attempt that fails
  // on a loaded machine (seen under the sanitizers) would fail fast-failing
  // calls with UNAVAILABLE, and the checks would blame the server.
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + testkit::scaled(milliseconds(10'000))))
    throw testkit::Failure("cannot connect to " + targets.front());
  return channel;
}

// ---------------------------------------------------------------- single calls

RpcResult work(grpc::Channel& channel, const std::string& id, long long work_ms, milliseconds timeout) {
  auto stub = Worker::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  WorkRequest request;
  request.set_id(id);
  request.set_work_ms(work_ms);
  WorkReply reply;
  RpcResult result;
  result.id = id;
  result.sent = Clock::now();
  grpc::Status status = stub->Work(&context, request, &reply);
  result.done = Clock::now();
  result.code = status.error_code();
  result.message = status.error_message();
  result.server_pid = reply.server_pid();
  return result;
}

std::string health(grpc::Channel& channel, milliseconds timeout) {
  auto stub = Health::NewStub(std::shared_ptr<grpc::Channel>(&channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  HealthCheckRequest request;
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) return code_name(status.error_code());
  return HealthCheckResponse::ServingStatus_Name(response.status());
}

// ---------------------------------------------------------------- streams

TickStream::TickStream(std::shared_ptr<grpc::Channel> channel, std::string id, long long interval_ms)
    : channel_(std::move(channel)) {
  reader_ = std::thread([this, id = std::move(id), interval_ms] {
    auto stub = Worker::NewStub(channel_);
    context_.set_wait_for_ready(true);  // a stream is opened once: wait for the connection
    TicksRequest request;
    request.set_id(id);
    request.set_interval_ms(interval_ms);
    auto reader = stub->Ticks(&context_, request);
    Tick tick;
    while (reader->Read(&tick)) {
      std::lock_guard lock(mu_);
      ++ticks_;
      cv_.notify_all();
    }
    grpc::Status status = reader->Finish();
    std::lock_guard lock(mu_);
    status_ = status;
    finished_ = true;
    cv_.notify_all();
  });
}

TickStream::~TickStream() {
  cancel();
  if (reader_.joinable()) reader_.join();
}

void TickStream::cancel() { context_.TryCancel(); }

bool TickStream::wait_ticks(long long n, milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, testkit::scaled(timeout), [&] { return ticks_ >= n; });
}

bool TickStream::wait_finished(milliseconds timeout) {
  std::unique_lock lock(mu_);
  return cv_.wait_for(lock, testkit::scaled(timeout), [&] { return finished_; });
}

long long TickStream::ticks() const {
  std::lock_guard lock(mu_);
  return ticks_;
}

grpc::Status TickStream::status() const {
  std::lock_guard lock(mu_);
  return status_;
}

// ---------------------------------------------------------------- load

struct Load::Impl {
  struct Call {
    grpc::ClientContext context;
    WorkRequest request;
    WorkReply reply;
    RpcResult result;
  };

  std::unique_ptr<Worker::Stub> stub;
  LoadOptions options;
  std::vector<std::unique_ptr<Call>> calls;  // touched by the sender thread only, until wait()
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;
  std::atomic<bool> held_back{false};
  int not_sent = 0;
  Clock::time_point start;
  std::thread sender;

  void send_all() {
    start = Clock::now();
    for (int i = 0; i < options.rpcs; ++i) {
      if (options.rate > 0)
        std::this_thread::sleep_until(start + std::chrono::nanoseconds(1'000'000'000LL * i / options.rate));
      if (held_back) {
        not_sent = options.rpcs - i;
        break;
      }
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return in_flight < options.concurrency; });
        ++in_flight;
      }
      auto call = std::make_unique<Call>();
      Call* c = call.get();
      calls.push_back(std::move(call));
      c->result.id = options.id_prefix + "-" + std::to_string(i + 1);
      c->request.set_id(c->result.id);
      c->request.set_work_ms(options.work_ms);
      c->context.set_deadline(std::chrono::system_clock::now() + options.rpc_timeout);
      if (options.wait_for_ready) c->context.set_wait_for_ready(true);
      c->result.sent = Clock::now();
      stub->async()->Work(&c->context, &c->request, &c->reply, [this, c](grpc::Status status) {
        std::lock_guard lock(mu);
        c->result.done = Clock::now();
        c->result.code = status.error_code();
        c->result.message = status.error_message();
        c->result.server_pid = c->reply.server_pid();
        --in_flight;
        cv.notify_all();
      });
    }
  }
};

Load::Load(std::shared_ptr<grpc::Channel> channel, LoadOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->stub = Worker::NewStub(std::move(channel));
  impl_->options = std::move(options);
  impl_->sender = std::thread([impl = impl_.get()] { impl->send_all(); });
}

Load::~Load() { wait(); }

void Load::hold_back() { impl_->held_back = true; }

LoadResult Load::wait() {
  if (impl_->sender.joinable()) impl_->sender.join();
  std::unique_lock lock(impl_->mu);
  impl_->cv.wait(lock, [&] { return impl_->in_flight == 0; });
  LoadResult result;
  for (auto& c : impl_->calls) result.rpcs.push_back(c->result);
  result.not_sent = impl_->not_sent;
  result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - impl_->start);
  return result;
}

// ---------------------------------------------------------------- the stop scenario

int StopReport::ok() const {
  return static_cast<int>(std::count_if(load.rpcs.begin(), load.rpcs.end(), [](auto& r) { return r.ok(); }));
}

int StopReport::failed() const { return static_cast<int>(load.rpcs.size()) - ok(); }

namespace {

std::map<std::string, std::pair<int, std::string>> by_code(const std::vector<RpcResult>& rpcs) {
  std::map<std::string, std::pair<int, std::string>> result;
  for (auto& r : rpcs) {
    if (r.ok()) continue;
    auto& entry = result[code_name(r.code)];
    if (entry.first++ == 0) entry.second = r.message;
  }
  return result;
}

std::vector<std::string> ok_not_persisted(const std::vector<RpcResult>& rpcs, const std::set<std::string>& persisted) {
  std::vector<std::string> ids;
  for (auto& r : rpcs)
    if (r.ok() && !persisted.count(r.id)) ids.push_back(r.id);
  return ids;
}

}  // namespace

std::map<std::string, std::pair<int, std::string>> StopReport::failed_by_code() const { return by_code(load.rpcs); }

std::vector<std::string> StopReport::lost() const { return ok_not_persisted(load.rpcs, persisted); }

std::vector<std::string> StopReport::abandoned() const {
  std::vector<std::string> ids;
  for (auto& r : load.rpcs)  // in id order
    if (started.count(r.id) && !persisted.count(r.id)) ids.push_back(r.id);
  return ids;
}

StopReport run_stop_scenario(const std::string& binary, testkit::RedisServer& redis,
                             const std::vector<std::string>& server_args, const StopOptions& options) {
  StopReport report;
  report.stage = basename_of(binary);
  redis.client().command({"DEL", "work:done"});
  Server server(binary, redis.address(), server_args);
  testkit::Process& process = server.process();
  auto channel = channel_to({server.target()});

  std::vector<std::unique_ptr<testkit::Process>> idle;
  for (int i = 0; i < options.idle_clients; ++i) {
    idle.push_back(std::make_unique<testkit::Process>(
        std::vector<std::string>{options.hold_client_binary, "--connect", server.target()}));
    idle.back()->expect_line("connected", milliseconds(10'000));
  }

  std::vector<std::unique_ptr<TickStream>> streams;
  for (int i = 1; i <= options.streams; ++i) {
    streams.push_back(std::make_unique<TickStream>(channel, "stream-" + std::to_string(i)));
    process.expect_line("stream: opened", milliseconds(5000));
  }

  Load load(channel, options.load);

  // A health-aware client: polls Check and stops sending once it reads
  // NOT_SERVING (what a load balancer or a client-side health check does).
  std::atomic<Clock::rep> signalled_at{0}, not_serving_at{0};
  std::jthread poller([&](std::stop_token polling) {
    while (!polling.stop_requested()) {
      if (health(*channel, milliseconds(200)) == "NOT_SERVING" && signalled_at != 0 && not_serving_at == 0) {
        not_serving_at = Clock::now().time_since_epoch().count();
        load.hold_back();
      }
      std::this_thread::sleep_for(milliseconds(5));
    }
  });

  if (options.sigterm_after >= 0) {
    for (int i = 0; i < options.sigterm_after; ++i) {
      std::string line = process.expect_line("work: started id=", milliseconds(10'000));
      report.in_flight.push_back(line.substr(line.find("id=") + 3));
    }
  } else {
    report.load = load.wait();
  }
  const auto signalled = process.send_signal(SIGTERM);
  signalled_at = signalled.time_since_epoch().count();

  report.exit = process.wait_exit(options.exit_timeout);
  if (report.exit) {
    report.shutdown_time = std::chrono::duration_cast<milliseconds>(process.exit_time() - signalled);
  } else {
    process.kill();  // proven: it did not stop on its own within the bound
  }
  if (options.sigterm_after >= 0) report.load = load.wait();
  poller.request_stop();
  poller.join();
  if (not_serving_at != 0)
    report.not_serving_after = std::chrono::duration_cast<milliseconds>(
        Clock::time_point(Clock::duration(not_serving_at.load())) - signalled);

  for (auto& s : streams) {
    s->cancel();
    s->wait_finished(milliseconds(5000));
    report.stream_ticks.push_back(s->ticks());
    report.stream_status.push_back(s->status());
  }

  if (report.exit) {
    std::optional<Clock::time_point> last_reply;
    for (auto& r : report.load.rpcs)
      if (r.ok() && (!last_reply || r.done > *last_reply)) last_reply = r.done;
    if (last_reply && *last_reply >= signalled)
      report.last_reply_to_exit = std::chrono::duration_cast<milliseconds>(process.exit_time() - *last_reply);
  }

  for (auto& id : redis.client().smembers("work:done")) report.persisted.insert(id);
  report.server_out = process.out();
  report.server_err = process.err();
  std::istringstream lines(report.server_out);
  for (std::string l; std::getline(lines, l);)
    if (l.rfind("work: started id=", 0) == 0) report.started.insert(l.substr(17));
  return report;
}

int RollingReport::ok() const {
  return static_cast<int>(std::count_if(load.rpcs.begin(), load.rpcs.end(), [](auto& r) { return r.ok(); }));
}

std::map<std::string, std::pair<int, std::string>> RollingReport::failed_by_code() const { return by_code(load.rpcs); }

std::vector<std::string> RollingReport::lost() const { return ok_not_persisted(load.rpcs, persisted); }

RollingReport run_rolling_restart(const std::string& binary, testkit::RedisServer& redis,
                                  const std::vector<std::string>& server_args, const LoadOptions& options,
                                  const std::string& service_config) {
  RollingReport report;
  redis.client().command({"DEL", "work:done"});
  std::vector<std::unique_ptr<Server>> servers;
  servers.push_back(std::make_unique<Server>(binary, redis.address(), server_args));
  servers.push_back(std::make_unique<Server>(binary, redis.address(), server_args));
  auto channel = channel_to({servers[0]->target(), servers[1]->target()}, service_config);
  Load load(channel, options);
  // Both in service before the first stop (a rolling update starts from
  // ready replicas): the balancer has a second server to move to.
  for (auto& server : servers) server->process().expect_line("work: started", milliseconds(10'000));
  for (auto& server : servers) {
    // Wait until this server is serving part of the load, then replace it.
    server->process().expect_line("work: started", milliseconds(10'000));
    server->process().send_signal(SIGTERM);
    report.exits.push_back(server->process().expect_exit(milliseconds(30'000)));
    int port = server->port();
    server = std::make_unique<Server>(binary, redis.address(), server_args, port);
    // Like maxUnavailable: 0, the next server is stopped only once this one
    // takes traffic again.
    server->process().expect_line("work: started", milliseconds(10'000));
  }
  load.hold_back();  // the rolling restart is over: send no more
  report.load = load.wait();
  for (auto& r : report.load.rpcs)
    if (r.ok()) report.server_pids.insert(r.server_pid);
  for (auto& id : redis.client().smembers("work:done")) report.persisted.insert(id);
  return report;
}

const std::vector<Stage>& stages() {
  // The drain is time for the announcement to reach the clients; a client
  // slowed down by a sanitizer needs more of it (TESTKIT_TIMEOUT_SCALE).
  static const milliseconds drain = testkit::scaled(milliseconds(300));
  static const milliseconds budget040 = testkit::scaled(milliseconds(1500));
  static const std::vector<Stage> all = {
      {"010-naive-exit", {}, std::nullopt},
      {"020-shutdown-thread", {}, std::nullopt},
      {"023-deadline", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"025-cancellable-handlers", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"025a-reactor-never-finishes", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"025b-reactor-finishes-on-cancel", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"027-report-cut-off", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"030-shutdown-deadline", {"--shutdown-timeout-ms", "1000"}, milliseconds(1000)},
      {"040-health-drain",
       {"--shutdown-timeout-ms", std::to_string(budget040.count()), "--drain-ms", std::to_string(drain.count())},
       budget040},
      {"050-last-call-closes",
       {"--shutdown-timeout-ms", std::to_string(budget040.count()), "--drain-ms", std::to_string(drain.count())},
       budget040},
      {"060-connection-age",
       {"--shutdown-timeout-ms", std::to_string(budget040.count()), "--drain-ms", std::to_string(drain.count())},
       budget040},
      {"070-quick-exit",
       {"--shutdown-timeout-ms", std::to_string(budget040.count()), "--drain-ms", std::to_string(drain.count())},
       budget040},
  };
  return all;
}

const Stage& stage(const std::string& prefix) {
  for (auto& s : stages())
    if (s.name.rfind(prefix, 0) == 0) return s;
  throw testkit::Failure("no stage " + prefix);
}

StopOptions under_load_options() {
  StopOptions o;
  o.load.rpcs = 40;
  o.load.rate = 50;
  o.load.work_ms = 400;
  o.sigterm_after = 10;
  o.exit_timeout = milliseconds(5000);
  return o;
}

StopOptions open_stream_options(const Stage& stage) {
  StopOptions o;
  o.load.rpcs = 0;
  o.streams = 1;
  o.sigterm_after = 0;
  o.exit_timeout = stage.budget ? *stage.budget + milliseconds(1000) : milliseconds(3000);
  return o;
}

std::string render(const StopReport& r) {
  std::ostringstream out;
  auto line = [&](const std::string& label, const std::string& value) {
    out << label << std::string(label.size() < 20 ? 20 - label.size() : 1, ' ') << value << "\n";
  };
  // The server's own account of the stop: its shutdown lines and its stderr.
  std::istringstream server_lines(r.server_out);
  for (std::string l; std::getline(server_lines, l);)
    if (l.rfind("shutdown:", 0) == 0 || l.rfind("cancelled:", 0) == 0) out << "server| " << l << "\n";
  std::istringstream err_lines(r.server_err);
  for (std::string l; std::getline(err_lines, l);) out << "server! " << l << "\n";

  line("sent:", std::to_string(r.load.rpcs.size()) +
                    (r.load.not_sent ? " (" + std::to_string(r.load.not_sent) +
                                           " held back: the server announced NOT_SERVING)"
                                     : ""));
  line("ok:", std::to_string(r.ok()));
  line("failed:", std::to_string(r.failed()));
  for (auto& [code, entry] : r.failed_by_code())
    line("  " + code + ":", std::to_string(entry.first));  // messages vary: --verbose lists them
  auto lost = r.lost();
  line("lost:", std::to_string(lost.size()) + " (answered OK, not in Redis)");
  auto abandoned = r.abandoned();
  std::string ids;
  for (std::size_t i = 0; i < abandoned.size() && i < 5; ++i) ids += (i ? " " : "") + abandoned[i];
  if (abandoned.size() > 5) ids += " ...";
  line("abandoned:", std::to_string(abandoned.size()) + " (started on the server, never persisted)" +
                         (ids.empty() ? "" : ": " + ids));
  for (std::size_t i = 0; i < r.stream_ticks.size(); ++i)
    line("stream-" + std::to_string(i + 1) + ":", std::to_string(r.stream_ticks[i]) + " ticks, ended " +
                                                      code_name(r.stream_status[i].error_code()));
  line("health:", r.not_serving_after
                      ? "NOT_SERVING " + std::to_string(r.not_serving_after->count()) + " ms after SIGTERM"
                      : "never NOT_SERVING");
  if (r.exit) {
    line("server exit:", r.exit->str() + ", " + std::to_string(r.shutdown_time->count()) + " ms after SIGTERM");
  } else {
    line("server exit:", "none: still running when the wait ended, killed");
  }
  if (r.last_reply_to_exit)
    line("last reply -> exit:", std::to_string(r.last_reply_to_exit->count()) + " ms");
  return out.str();
}

}  // namespace grpcstop
