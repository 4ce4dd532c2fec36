// 027-report-cut-off: say what the deadline cut off, and exit 1 if anything.
//
// Demonstrates: a bounded stop that ends work is not a graceful one, and
//   must say so. The signal thread records the deadline where the handlers
//   can see it; a handler that returns cancelled after the deadline was cut
//   off by it, one that returns cancelled before it lost its client. A
//   cut-off call is reported by id on stderr ("abandoned: ..."), counted,
//   and the exit status is 1 when anything was cut off: the stop was
//   bounded, not graceful, and the orchestrator's logs show it.
// Still wrong: a second signal does nothing: the signal thread is busy in
//   Shutdown() and takes no more signals. Health still says SERVING until
//   the listener closes, so RPCs sent just after SIGTERM fail.
// Reproduces: seed 004's go-zero gracefulStop, which logs when it has to
//   force the stop.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
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
  support::Flags flags(argc, argv,
                       "usage: 027-report-cut-off [--listen IPV4] [--port N (0 = any)] [--redis HOST:PORT] "
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
  std::thread signal_thread([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);  // ordinary code from here on: may lock and allocate
    const auto started = steady_clock::now();
    std::printf("shutdown: SIG%s received, Shutdown() with a %lld ms deadline\n", sigabbrev_np(sig),
                static_cast<long long>(shutdown_timeout.count()));
    stop_state.deadline = (started + shutdown_timeout).time_since_epoch().count();
    // At the deadline gRPC cancels what is left; the handlers see IsCancelled().
    server->Shutdown(std::chrono::system_clock::now() + (started + shutdown_timeout - steady_clock::now()));
    const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
    const int cut_off = stop_state.cut_off;
    std::printf("shutdown: complete in %lld ms, %d call(s) cut off\n", static_cast<long long>(took.count()), cut_off);
  });
  server->Wait();  // returns once Shutdown() has finished
  signal_thread.join();
  // docs:end signal-thread
  return stop_state.cut_off == 0 ? 0 : 1;
}
