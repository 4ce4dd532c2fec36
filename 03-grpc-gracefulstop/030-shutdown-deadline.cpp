// 030-shutdown-deadline: Shutdown(deadline), handlers that honour
// cancellation, and a second signal that forces the exit.
//
// Demonstrates: the stop is bounded. main() waits for the stop request from
//   the signal thread, then calls Shutdown(now + --shutdown-timeout-ms). At
//   the deadline gRPC cancels whatever is still running (clients see
//   UNAVAILABLE). Cancelling is only half of it: a synchronous handler runs
//   on a gRPC thread that nobody can interrupt, and Shutdown(deadline) still
//   waits for it to return. So Work sleeps in slices and Ticks waits between
//   ticks, both checking ServerContext::IsCancelled(); a cut-off call is
//   reported by id on stderr and is not persisted. The signal thread keeps
//   listening: a second SIGTERM/SIGINT forces _exit(1) at once.
//   Exit status: 0 when everything finished before the deadline, 1 when a
//   call had to be cut off (the stop was bounded, not graceful).
// Still wrong: nobody is told the server is going away before it refuses
//   new RPCs: health says SERVING until the listener closes, and an RPC sent
//   just after SIGTERM fails with UNAVAILABLE.
// Reproduces: seed 004's go-zero gracefulStop (wait a bounded time, then
//   force the exit) and the C++ trap Go never meets: a handler that ignores
//   IsCancelled() keeps Shutdown(deadline) waiting past its deadline.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>

#include "redis_ledger.hpp"
#include "support/flags.hpp"
#include "work.grpc.pb.h"

namespace {

using gs::work::v1::Tick;
using gs::work::v1::TicksRequest;
using gs::work::v1::WorkReply;
using gs::work::v1::WorkRequest;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Bad input is refused before any work starts, so nothing is persisted.
std::optional<grpc::Status> invalid_id(const std::string& id) {
  if (id.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must not be empty");
  if (id.size() > 64) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id longer than 64 characters");
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must be printable ASCII");
  return std::nullopt;
}

// What the handlers need to know about the stop: when the deadline is (zero
// while serving), and how many calls were cut off at it.
struct StopState {
  std::atomic<steady_clock::rep> deadline{0};
  std::atomic<int> cut_off{0};
  // gRPC's timer and ours read different clocks: allow it to fire a little early.
  bool deadline_passed() const {
    auto d = deadline.load();
    return d != 0 && steady_clock::now() + milliseconds(20) >= steady_clock::time_point(steady_clock::duration(d));
  }
};

// docs:begin cancellable-wait
// Sleeps for `how_long` in short slices; false as soon as the call is
// cancelled (client gone, or the shutdown deadline passed). gRPC cannot stop a
// synchronous handler: it can only set the flag this loop looks at.
bool wait_unless_cancelled(grpc::ServerContext* context, milliseconds how_long) {
  const auto until = steady_clock::now() + how_long;
  while (!context->IsCancelled()) {
    auto left = until - steady_clock::now();
    if (left <= steady_clock::duration::zero()) return true;
    std::this_thread::sleep_for(std::min<steady_clock::duration>(left, milliseconds(5)));
  }
  return false;
}
// docs:end cancellable-wait

class WorkerService final : public gs::work::v1::Worker::Service {
 public:
  WorkerService(ledger::RedisLedger& ledger, StopState& stop) : ledger_(ledger), stop_(stop) {}

  // docs:begin work
  grpc::Status Work(grpc::ServerContext* context, const WorkRequest* request, WorkReply* reply) override {
    if (auto bad = invalid_id(request->id())) return *bad;
    if (request->work_ms() < 0 || request->work_ms() > 60'000)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "work_ms must be within 0..60000");
    std::printf("work: started id=%s\n", request->id().c_str());
    if (!wait_unless_cancelled(context, milliseconds(request->work_ms()))) {
      report_cancelled("work id=" + request->id() + " not persisted");
      return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled before the work was done");
    }
    // docs:end work
    std::string error;
    if (!ledger_.persist(request->id(), &error)) {
      std::fprintf(stderr, "work: id=%s not persisted: %s\n", request->id().c_str(), error.c_str());
      return grpc::Status(grpc::StatusCode::INTERNAL, "not persisted: " + error);
    }
    reply->set_id(request->id());
    reply->set_server_pid(::getpid());
    return grpc::Status::OK;
  }

  // docs:begin ticks
  grpc::Status Ticks(grpc::ServerContext* context, const TicksRequest* request,
                     grpc::ServerWriter<Tick>* writer) override {
    if (auto bad = invalid_id(request->id())) return *bad;
    if (request->interval_ms() < 1 || request->interval_ms() > 10'000)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "interval_ms must be within 1..10000");
    std::printf("stream: opened id=%s\n", request->id().c_str());
    long long seq = 0;
    Tick tick;
    do {
      tick.set_seq(++seq);
      if (!writer->Write(tick)) break;
    } while (wait_unless_cancelled(context, milliseconds(request->interval_ms())));
    report_cancelled("stream id=" + request->id() + " after " + std::to_string(seq) + " ticks");
    return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended");
  }
  // docs:end ticks

 private:
  // A call cut off by the deadline is abandoned work: say which, on stderr.
  void report_cancelled(const std::string& what) {
    if (stop_.deadline_passed()) {
      ++stop_.cut_off;
      std::fprintf(stderr, "abandoned: %s (cut off at the shutdown deadline)\n", what.c_str());
    } else {
      std::printf("cancelled: %s (client gone)\n", what.c_str());
    }
  }

  ledger::RedisLedger& ledger_;
  StopState& stop_;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: 030-shutdown-deadline [--listen IPV4] [--port N (0 = any)] "
                       "[--redis HOST:PORT] "
                       "[--shutdown-timeout-ms MS]");
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
  sigaddset(&stop_signals, SIGUSR1);  // main() wakes the signal thread with it at the end
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
  StopState stop_state;
  WorkerService service(ledger, stop_state);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || bound_port == 0) {
    std::fprintf(stderr, "error: --port: cannot listen on %s:%d (address in use?)\n", listen.c_str(), port);
    return 2;
  }
  std::printf("ready port=%d pid=%d\n", bound_port, ::getpid());
  // docs:end server

  // docs:begin signal-thread
  std::stop_source stop;
  std::atomic<bool> finished{false};
  std::atomic<steady_clock::rep> stop_requested_at{0};
  std::thread signal_thread([&] {
    while (!finished) {
      int sig = 0;
      if (sigwait(&stop_signals, &sig) != 0 || sig == SIGUSR1) continue;
      if (stop.stop_requested()) {
        // Second signal: whoever sent it does not want to wait any longer.
        static const char msg[] = "shutdown: second signal, forcing exit\n";
        (void)!::write(STDERR_FILENO, msg, sizeof msg - 1);
        ::_exit(1);
      }
      stop_requested_at = steady_clock::now().time_since_epoch().count();
      std::printf("shutdown: SIG%s received, Shutdown() with a %lld ms deadline\n", sigabbrev_np(sig),
                  static_cast<long long>(shutdown_timeout.count()));
      stop.request_stop();
    }
  });
  // docs:end signal-thread

  // docs:begin shutdown
  {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, stop.get_token(), [] { return false; });  // until the signal thread asks
  }
  const auto started = steady_clock::time_point(steady_clock::duration(stop_requested_at.load()));
  stop_state.deadline = (started + shutdown_timeout).time_since_epoch().count();
  // At the deadline gRPC cancels what is left; the handlers see IsCancelled().
  server->Shutdown(std::chrono::system_clock::now() + (started + shutdown_timeout - steady_clock::now()));
  server->Wait();
  const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
  const int cut_off = stop_state.cut_off;
  std::printf("shutdown: complete in %lld ms, %d call(s) cut off\n", static_cast<long long>(took.count()), cut_off);
  // docs:end shutdown

  finished = true;
  pthread_kill(signal_thread.native_handle(), SIGUSR1);
  signal_thread.join();
  return cut_off == 0 ? 0 : 1;
}
