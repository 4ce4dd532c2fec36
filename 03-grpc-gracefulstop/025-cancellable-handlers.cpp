// 025-cancellable-handlers: handlers that look at IsCancelled() while they
// wait, so the deadline really ends them.
//
// Demonstrates: gRPC cannot stop a synchronous handler; it can only set a
//   flag. So Work sleeps in slices of 5 ms and Ticks waits between ticks the
//   same way, both checking ServerContext::IsCancelled(): at the deadline
//   (or when the client goes away) they return within a slice, and
//   Shutdown(deadline) returns at its deadline.
//   A behaviour change, on purpose: a Work cancelled before its work was
//   done returns CANCELLED and does NOT persist its id. Its client was
//   already told UNAVAILABLE (at the deadline) or gave up itself; a client
//   told "failed" retries, so persisting anyway would do the work twice.
//   OK still means "persisted"; a failure now means "not done", as far as
//   the handler can know (a cancel that arrives during the write to Redis
//   is too late: that Work is persisted and its reply is lost).
// Still wrong: nothing says what the deadline cut off: a cut call and a
//   client that left look the same, and the exit status is 0 either way. A
//   second signal does nothing. Health still says SERVING until the
//   listener closes.
// Reproduces: the polling loop every synchronous C++ gRPC server needs (Go
//   handlers get a context that is cancelled; C++'s sync API has only the
//   flag). 025a/025b show the callback API, which notifies instead.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
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
  explicit WorkerService(ledger::RedisLedger& ledger) : ledger_(ledger) {}

  // docs:begin work
  grpc::Status Work(grpc::ServerContext* context, const WorkRequest* request, WorkReply* reply) override {
    if (auto bad = invalid_id(request->id())) return *bad;
    if (request->work_ms() < 0 || request->work_ms() > 60'000)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "work_ms must be within 0..60000");
    std::printf("work: started id=%s\n", request->id().c_str());
    if (!wait_unless_cancelled(context, milliseconds(request->work_ms()))) {
      // Its client was told the call failed: doing the work anyway would
      // have it done twice once the client retries.
      std::printf("cancelled: work id=%s not persisted\n", request->id().c_str());
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
      if (!writer->Write(tick)) break;  // the client is gone
    } while (wait_unless_cancelled(context, milliseconds(request->interval_ms())));
    std::printf("stream: closed id=%s after %lld ticks (cancelled)\n", request->id().c_str(), seq);
    return grpc::Status(grpc::StatusCode::CANCELLED, "stream ended");
  }

 private:
  ledger::RedisLedger& ledger_;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 025-cancellable-handlers [--listen IPV4] [--port N (0 = any)] [--redis HOST:PORT] "
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
  WorkerService service(ledger);
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
    // At the deadline gRPC cancels what is left; the handlers see IsCancelled().
    server->Shutdown(std::chrono::system_clock::now() + shutdown_timeout);
    auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    std::printf("shutdown: complete in %lld ms\n", static_cast<long long>(took.count()));
  });
  server->Wait();  // returns once Shutdown() has finished
  signal_thread.join();
  // docs:end signal-thread
  return 0;
}
