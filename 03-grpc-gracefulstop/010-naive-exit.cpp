// 010-naive-exit: a gRPC server that does nothing about SIGTERM.
//
// Demonstrates: the Worker service (proto/work.proto) on gRPC C++ with the
//   standard health service. Work sleeps for the requested time, then adds
//   the request id to a Redis set and only then answers OK. Ticks streams
//   until the client goes away. main() blocks in Server::Wait() forever.
// Still wrong: SIGTERM's default action ends the process wherever it is.
//   Every RPC in flight fails with UNAVAILABLE ("Socket closed") and its id
//   is never persisted; open streams break the same way; health says SERVING
//   until the very end, so nobody was warned.
// Reproduces: seed 001's "Connection reset by peer" seen by gRPC callers
//   during a rolling update, and the seeds' starting point (seed 000, seed 002:
//   a gRPC server without GracefulStop).
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
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
  support::Flags flags(argc, argv, "usage: 010-naive-exit [--listen IPV4] [--port N (0 = any)] [--redis HOST:PORT]");
  const std::string listen = flags.ipv4("--listen");  // default 127.0.0.1
  const int port = flags.port("--port", 50051);
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  flags.done();
  ::signal(SIGPIPE, SIG_IGN);  // a peer that vanished must be an error code, not death

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
  server->Wait();  // never returns: SIGTERM's default action ends the process in here
  // docs:end server
  return 0;
}
