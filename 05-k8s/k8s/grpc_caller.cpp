// k8s-grpc-caller: long-lived gRPC callers, as seed 001's services were.
// Each caller opens ONE channel to the target (a Service's ClusterIP) and
// keeps it for its whole life, calling Work(id, work_ms) back to back at a
// pace. Built from chapter 03's public interface (proto/work.proto and
// proto/health.proto), never from its sources.
//
//   k8s-grpc-caller --target 10.96.0.10:50051 [--callers 4] [--work-ms 200]
//                   [--pause-ms 20] [--reconnect-backoff-ms 1000]
//                   [--max-reconnect-backoff-ms 120000]
//     until SIGTERM/SIGINT: one line per RPC as it ends, "ok ID ms=MS
//     pid=PID" (how long the call took, and the pid of the server that
//     answered, from the reply) or "fail ID ms=MS CODE: message", then
//     "callers: N sent, N ok, N failed"; exit 0.
//   k8s-grpc-caller --probe ADDR:PORT
//     a kubelet grpc readinessProbe: exit 0 if grpc.health.v1 Check("")
//     answers SERVING within 1 s, 1 otherwise.
#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "health.grpc.pb.h"
#include "support/flags.hpp"
#include "work.grpc.pb.h"

namespace {

const char* code_name(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    default: return "OTHER";
  }
}

int probe(const std::string& target) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse res;
  const auto st = stub->Check(&ctx, req, &res);
  return st.ok() && res.status() == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: k8s-grpc-caller --target HOST:PORT [--callers N] [--work-ms MS] [--pause-ms MS]\n"
                       "                       [--reconnect-backoff-ms MS] [--max-reconnect-backoff-ms MS]\n"
                       "       k8s-grpc-caller --probe HOST:PORT");
  const auto probe_target = flags.text("--probe", "none", 200);
  const auto target = flags.text("--target", "none", 200);
  const auto callers = flags.integer("--callers", 4, 1, 256);
  const auto work_ms = flags.integer("--work-ms", 200, 0, 60'000);
  const auto pause = flags.millis("--pause-ms", 20, 0, 60'000);
  // gRPC's reconnect backoff (C-core defaults: 1 s growing to 120 s), so
  // that a simulation that scales time can scale it too.
  const auto backoff = flags.integer("--reconnect-backoff-ms", 1000, 1, 600'000);
  const auto max_backoff = flags.integer("--max-reconnect-backoff-ms", 120'000, 1, 600'000);
  flags.done();
  if (probe_target != "none") return probe(probe_target);
  if (target == "none") support::Flags::fail("--target", "required (HOST:PORT)");

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);  // before gRPC starts its threads

  std::atomic<bool> stop{false};
  std::mutex out;
  std::atomic<long> sent{0}, ok{0}, failed{0};
  std::vector<std::thread> threads;
  for (long long c = 0; c < callers; ++c) {
    threads.emplace_back([&, c] {
      // A channel of its own, with a connection of its own (C-core shares
      // connections between channels unless told otherwise): one caller =
      // one long-lived TCP connection, as a separate process would have.
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, static_cast<int>(backoff));
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, static_cast<int>(std::max(backoff, max_backoff)));
      auto stub = gs::work::v1::Worker::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      for (long long n = 0; !stop; ++n) {
        gs::work::v1::WorkRequest req;
        req.set_id("c" + std::to_string(c) + "-" + std::to_string(n));
        req.set_work_ms(work_ms);
        gs::work::v1::WorkReply reply;
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(10 * work_ms + 5000));
        ++sent;
        const auto started = std::chrono::steady_clock::now();
        const auto st = stub->Work(&ctx, req, &reply);
        const long long took_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
        {
          std::lock_guard lock(out);
          if (st.ok()) {
            ++ok;
            std::printf("ok %s ms=%lld pid=%d\n", req.id().c_str(), took_ms, static_cast<int>(reply.server_pid()));
          } else {
            ++failed;
            std::printf("fail %s ms=%lld %s: %s\n", req.id().c_str(), took_ms, code_name(st.error_code()),
                        st.error_message().c_str());
          }
        }
        std::this_thread::sleep_for(pause);
      }
    });
  }
  std::printf("ready callers=%lld\n", static_cast<long long>(callers));
  int sig = 0;
  sigwait(&stop_signals, &sig);
  stop = true;
  std::thread([&stop_signals] {  // the course's rule: a second signal forces exit 1
    int again = 0;
    sigwait(&stop_signals, &again);
    std::_Exit(1);
  }).detach();
  for (auto& t : threads) t.join();
  std::printf("callers: %ld sent, %ld ok, %ld failed\n", sent.load(), ok.load(), failed.load());
  return 0;
}
