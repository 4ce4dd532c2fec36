// 025a-reactor-never-finishes: 025 written with gRPC's callback API, which
// notifies a cancellation instead of being polled for it; and its trap.
// A side stage: the alternative to 025, not a step towards 027.
//
// Demonstrates: the callback API, gRPC's recommended C++ server API.
//   Worker::CallbackService's methods return a reactor at once and no
//   thread waits in them: Work is a ServerUnaryReactor whose work is a timer
//   (in a real service, an asynchronous call), Ticks a ServerWriteReactor
//   that writes a tick, waits for OnWriteDone, sets a timer for the next.
//   Nobody polls IsCancelled(): gRPC calls OnCancel() when the client goes
//   away or the shutdown deadline cancels the call, and OnCancel() stops
//   the timer, so a cancelled Work is not persisted (as in 025).
// Still wrong, on purpose: OnCancel() stops the work and forgets the call.
//   Every call must end with Finish(), "even if the RPC is already
//   cancelled" (grpcpp/support/server_callback.h); until it does, gRPC
//   keeps the call, and Shutdown() waits for every call. A stream cancelled
//   at the deadline is never finished, so Shutdown(deadline) never returns
//   and the process never exits: worse than 025, which at least returned
//   from its handlers. The same for a Work whose client gave up: the call
//   stays, and the next stop hangs on it. Everything else as in 025.
// Reproduces: the callback API's own shutdown trap: a reactor that never
//   calls Finish() holds Shutdown() forever, deadline or not.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include "redis_ledger.hpp"
#include "support/flags.hpp"
#include "timer_queue.hpp"
#include "work.grpc.pb.h"

namespace {

using gs::work::v1::Tick;
using gs::work::v1::TicksRequest;
using gs::work::v1::WorkReply;
using gs::work::v1::WorkRequest;
using std::chrono::milliseconds;
using timers::TimerQueue;

// Bad input is refused before any work starts, so nothing is persisted.
std::optional<grpc::Status> invalid_id(const std::string& id) {
  if (id.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must not be empty");
  if (id.size() > 64) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id longer than 64 characters");
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must be printable ASCII");
  return std::nullopt;
}

// docs:begin work-reactor
class WorkReactor final : public grpc::ServerUnaryReactor {
 public:
  WorkReactor(ledger::RedisLedger& ledger, TimerQueue& timers, const WorkRequest& request, WorkReply* reply)
      : ledger_(ledger), timers_(timers), id_(request.id()), reply_(reply) {
    std::optional<grpc::Status> bad = invalid_id(id_);
    if (!bad && (request.work_ms() < 0 || request.work_ms() > 60'000))
      bad = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "work_ms must be within 0..60000");
    if (bad) {
      Finish(*bad);  // bad input: nothing to do, nothing persisted
      return;
    }
    std::printf("work: started id=%s\n", id_.c_str());
    timer_ = timers_.after(milliseconds(request.work_ms()), [this] { worked(); });
  }

  // Called by gRPC when the client goes away or the shutdown deadline
  // passes: a notification, nothing polls.
  void OnCancel() override {
    if (!timers_.cancel(timer_)) return;  // the work is done or being done: worked() finishes the call
    std::printf("cancelled: work id=%s not persisted\n", id_.c_str());
    // The work is stopped, and the call forgotten: no Finish().
  }
  void OnDone() override { delete this; }

 private:
  void worked() {  // on the timer thread, unless OnCancel() took the timer back
    std::string error;
    if (!ledger_.persist(id_, &error)) {
      std::fprintf(stderr, "work: id=%s not persisted: %s\n", id_.c_str(), error.c_str());
      return Finish(grpc::Status(grpc::StatusCode::INTERNAL, "not persisted: " + error));
    }
    reply_->set_id(id_);
    reply_->set_server_pid(::getpid());
    Finish(grpc::Status::OK);
  }

  ledger::RedisLedger& ledger_;
  TimerQueue& timers_;
  const std::string id_;
  WorkReply* const reply_;
  TimerQueue::Id timer_ = 0;
};
// docs:end work-reactor

// docs:begin ticks-reactor
class TicksReactor final : public grpc::ServerWriteReactor<Tick> {
 public:
  TicksReactor(TimerQueue& timers, const TicksRequest& request)
      : timers_(timers), id_(request.id()), interval_(request.interval_ms()) {
    std::optional<grpc::Status> bad = invalid_id(id_);
    if (!bad && (request.interval_ms() < 1 || request.interval_ms() > 10'000))
      bad = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "interval_ms must be within 1..10000");
    if (bad) {
      Finish(*bad);
      return;
    }
    std::printf("stream: opened id=%s\n", id_.c_str());
    write_next();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return;  // the call was cancelled while a tick was on its way: OnCancel() cleans up
    timer_ = timers_.after(interval_, [this] { write_next(); });
  }
  void OnCancel() override {
    std::printf("stream: cancelled id=%s after %lld ticks\n", id_.c_str(), seq_.load());
    timers_.cancel(timer_);  // no more ticks; and the call forgotten: no Finish()
  }
  void OnDone() override { delete this; }

 private:
  void write_next() {
    tick_.set_seq(++seq_);
    StartWrite(&tick_);
  }

  TimerQueue& timers_;
  const std::string id_;
  const milliseconds interval_;
  Tick tick_;
  std::atomic<long long> seq_{0};
  std::atomic<TimerQueue::Id> timer_{0};  // set in OnWriteDone, read in OnCancel: they may run at once
};
// docs:end ticks-reactor

class WorkerService final : public gs::work::v1::Worker::CallbackService {
 public:
  WorkerService(ledger::RedisLedger& ledger, TimerQueue& timers) : ledger_(ledger), timers_(timers) {}

  grpc::ServerUnaryReactor* Work(grpc::CallbackServerContext*, const WorkRequest* request, WorkReply* reply) override {
    return new WorkReactor(ledger_, timers_, *request, reply);
  }
  grpc::ServerWriteReactor<Tick>* Ticks(grpc::CallbackServerContext*, const TicksRequest* request) override {
    return new TicksReactor(timers_, *request);
  }

 private:
  ledger::RedisLedger& ledger_;
  TimerQueue& timers_;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 025a-reactor-never-finishes [--listen IPV4] [--port N (0 = any)] "
                       "[--redis HOST:PORT] [--shutdown-timeout-ms MS]");
  const std::string listen = flags.ipv4("--listen");  // default 127.0.0.1
  const int port = flags.port("--port", 50051);
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  const milliseconds shutdown_timeout = flags.millis("--shutdown-timeout-ms", 5000, 1, 600'000);
  flags.done();
  ::signal(SIGPIPE, SIG_IGN);  // a peer that vanished must be an error code, not death

  // docs:begin block
  // Block before any thread exists (gRPC starts its own in BuildAndStart):
  // threads inherit the mask, so only sigwait() below ever takes these.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // docs:end block

  ledger::RedisLedger ledger(redis_host, redis_port);
  if (std::string error; !ledger.ping(&error)) {
    std::fprintf(stderr, "error: --redis: cannot reach Redis at %s:%d: %s\n", redis_host.c_str(), redis_port,
                 error.c_str());
    return 1;
  }

  // docs:begin server
  grpc::EnableDefaultHealthCheckService(true);  // grpc.health.v1, "" = SERVING
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen + ":" + std::to_string(port), grpc::InsecureServerCredentials(), &bound_port);
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would
  // start and silently share it. Refuse instead, like any other server.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  TimerQueue timers;  // outlives the server: a reactor may still hold a timer
  WorkerService service(ledger, timers);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "error: --port: cannot listen on %s:%d (address in use?)\n", listen.c_str(), port);
    return 2;
  }
  std::printf("ready port=%d pid=%d\n", bound_port, ::getpid());
  // docs:end server

  // docs:begin signal-thread
  std::thread signal_thread([&server, &stop_signals, shutdown_timeout] {
    int sig = 0;
    sigwait(&stop_signals, &sig);  // ordinary code from here on: may lock and allocate
    std::printf("shutdown: SIG%s received, Shutdown() with a %lld ms deadline\n", sigabbrev_np(sig),
                static_cast<long long>(shutdown_timeout.count()));
    auto start = std::chrono::steady_clock::now();
    // At the deadline gRPC cancels what is left: each reactor's OnCancel() runs.
    server->Shutdown(std::chrono::system_clock::now() + shutdown_timeout);
    auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    std::printf("shutdown: complete in %lld ms\n", static_cast<long long>(took.count()));
  });
  server->Wait();  // returns once Shutdown() has finished
  signal_thread.join();
  // A call is done for gRPC once its status is on its way, which may be
  // before the timer thread has returned from Finish(): stop that thread
  // before the server it calls into is destroyed.
  timers.stop();
  // docs:end signal-thread
  return 0;
}
