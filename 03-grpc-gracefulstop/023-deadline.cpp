// 023-deadline: Shutdown(deadline) instead of Shutdown(), the same handlers.
//
// Demonstrates: the one change Go programmers know from go-zero's
//   gracefulStop (seed 004): give the stop a deadline. The signal thread now
//   calls Shutdown(now + --shutdown-timeout-ms). At the deadline gRPC
//   cancels every call still running: its client gets UNAVAILABLE at once,
//   and ServerContext::IsCancelled() turns true. The Ticks loop looks at
//   IsCancelled() before every tick, so an open stream no longer holds the
//   stop for ever: it ends within one interval after the deadline.
// Still wrong: cancelling is not stopping. A synchronous handler runs on a
//   gRPC thread nobody can interrupt, and Shutdown(deadline) still waits for
//   it to return. Work sleeps for its whole work_ms without looking, so a
//   long Work holds the stop past its deadline, and then persists its id and
//   answers OK into the void: its client was told UNAVAILABLE at the
//   deadline, and will likely retry work that was done. The log says "client
//   gone" for a stream the deadline cut, and the exit status is 0 whatever
//   was cut. A second signal does nothing: the signal thread is busy in
//   Shutdown(). Health still says SERVING until the listener closes.
// Reproduces: seed 004's bounded stop, and the C++ trap Go never meets: a
//   handler that ignores IsCancelled() keeps Shutdown(deadline) waiting past
//   its deadline.
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

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

// Bad input is refused before any work starts, so nothing is persisted.
std::optional<grpc::Status> invalid_id(const std::string& id) {
  if (id.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must not be empty");
  if (id.size() > 64) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id longer than 64 characters");
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "id must be printable ASCII");
  return std::nullopt;
}

class WorkerService final : public gs::work::v1::Worker::Service {
 public:
  explicit WorkerService(ledger::RedisLedger& ledger) : ledger_(ledger) {}

  grpc::Status Work(grpc::ServerContext*, const WorkRequest* request, WorkReply* reply) override {
    if (auto bad = invalid_id(request->id())) return *bad;
    if (request->work_ms() < 0 || request->work_ms() > 60'000)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "work_ms must be within 0..60000");
    std::printf("work: started id=%s\n", request->id().c_str());
    std::this_thread::sleep_for(milliseconds(request->work_ms()));
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
    while (!context->IsCancelled()) {
      tick.set_seq(++seq);
      if (!writer->Write(tick)) break;  // the client is gone
      std::this_thread::sleep_for(milliseconds(request->interval_ms()));
    }
    std::printf("stream: closed id=%s after %lld ticks (client gone)\n", request->id().c_str(), seq);
    return grpc::Status::OK;
  }

 private:
  ledger::RedisLedger& ledger_;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 023-deadline [--listen IPV4] [--port N (0 = any)] [--redis HOST:PORT] "
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
    // At the deadline gRPC cancels what is left, then still waits for every
    // handler to return: it cannot interrupt one.
    server->Shutdown(std::chrono::system_clock::now() + shutdown_timeout);
    auto took = std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
    std::printf("shutdown: complete in %lld ms\n", static_cast<long long>(took.count()));
  });
  server->Wait();  // returns once Shutdown() has finished
  signal_thread.join();
  // docs:end signal-thread
  return 0;
}
