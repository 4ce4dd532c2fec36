// hold-client - a long-lived caller: one channel, kept open and idle.
//
//   hold-client --connect HOST:PORT [--work-ms MS (-1 = no call)] [--close] [--keep-sending]
//               [--health-checked]
//
// Connects, prints "connected", sends at most one Work RPC and prints
// "reply: CODE at_ns=N" (N: CLOCK_MONOTONIC, comparable across processes),
// then keeps the channel open and does nothing until SIGTERM or SIGINT
// (--close: drops the channel after the reply, as a one-shot client does;
// --keep-sending: a busy caller, which also sends a Work of 0 ms every 5 ms
// on the same channel, from connecting until SIGTERM, whatever they return;
// --health-checked: round_robin with client-side health checking and no
// retries, "connected" once the balancer's health Watch said SERVING).
// It never sets GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS itself: an idle
// channel reads its socket only on the backup poll, every 5 s by default as
// for real clients; a test that needs it never to come sets it longer.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "scenarios.hpp"
#include "support/flags.hpp"
#include "work.grpc.pb.h"

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: hold-client --connect HOST:PORT [--work-ms MS (-1 = no call)] [--close] "
                       "[--keep-sending] [--health-checked]");
  const auto [host, port] = flags.host_port("--connect", "127.0.0.1:50051");
  const long long work_ms = flags.integer("--work-ms", -1, -1, 60'000);
  const bool close = flags.present("--close");
  const bool keep_sending = flags.present("--keep-sending");
  const bool health_checked = flags.present("--health-checked");
  flags.done();
  if (close && keep_sending) support::Flags::fail("--keep-sending", "cannot keep sending on a channel it closes");
  // Blocked before gRPC starts a thread: only sigwait() below takes them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::shared_ptr<grpc::Channel> channel;
  if (health_checked) {
    grpc::ChannelArguments args;
    args.SetServiceConfigJSON(grpcstop::kNoRetryServiceConfig);
    args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    channel = grpc::CreateCustomChannel("ipv4:" + host + ":" + std::to_string(port),
                                        grpc::InsecureChannelCredentials(), args);
  } else {
    channel = grpc::CreateChannel(host + ":" + std::to_string(port), grpc::InsecureChannelCredentials());
  }
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    std::fprintf(stderr, "hold-client: --connect: cannot connect to %s:%d\n", host.c_str(), port);
    return 1;
  }
  std::printf("connected pid=%d\n", ::getpid());
  std::atomic<bool> stopping{false};
  std::thread sender;
  if (keep_sending) {
    sender = std::thread([&] {
      auto stub = gs::work::v1::Worker::NewStub(channel);
      for (long long n = 1; !stopping; ++n) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        gs::work::v1::WorkRequest request;
        request.set_id("busy-" + std::to_string(::getpid()) + "-" + std::to_string(n));
        request.set_work_ms(0);
        gs::work::v1::WorkReply reply;
        (void)stub->Work(&context, request, &reply);  // after the stop these fail: the caller goes on anyway
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    });
  }
  if (work_ms >= 0) {
    auto stub = gs::work::v1::Worker::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(work_ms + 30'000));
    gs::work::v1::WorkRequest request;
    request.set_id("hold-" + std::to_string(::getpid()));
    request.set_work_ms(work_ms);
    gs::work::v1::WorkReply reply;
    grpc::Status status = stub->Work(&context, request, &reply);
    const auto at = std::chrono::steady_clock::now().time_since_epoch();
    std::printf("reply: %s at_ns=%lld\n", grpcstop::code_name(status.error_code()).c_str(),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::nanoseconds>(at).count()));
  }
  if (close) {
    channel.reset();
    std::printf("closed\n");
  }
  int sig = 0;
  sigwait(&stop_signals, &sig);
  stopping = true;
  if (sender.joinable()) sender.join();
  return 0;
}
