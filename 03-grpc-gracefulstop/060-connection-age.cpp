// 060-connection-age: long-lived callers are moved to new servers while
// the server runs, not only when it stops.
//
// Demonstrates: GRPC_ARG_MAX_CONNECTION_AGE_MS and
//   GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS (gRFC A9). Behind an L4 balancer
//   (a Kubernetes Service: kube-proxy rewrites each new connection's
//   destination, once) a caller's one connection stays on one pod for as
//   long as it lives: a pod added by a scale-up or a rollout gets none of
//   the callers that were already connected. With a maximum age, the server
//   sends each connection a GOAWAY when it is older than the age (+/-10 %
//   jitter per connection), lets the calls in flight finish, and closes it
//   at the latest after the grace; the caller opens a new connection, which
//   the balancer places again. The calls in flight are not cut: the GOAWAY
//   is the graceful two-step one, and unlike a shutdown the server keeps
//   accepting every call that was already on its way.
// Still wrong: nothing new for the stop itself (it is 050's); the age is a
//   trade: each reconnection costs a handshake, and the grace bounds the
//   longest call or stream a connection can carry across an age GOAWAY.
// Reproduces: callers of seed 001's services pinned to old pods for hours.
#include <grpc/grpc.h>
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
#include <set>
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

// docs:begin tracker
// The calls of our own service that have not been answered yet. A handler
// registers its context on entry; gRPC's PostSynchronousRequest hook, which
// runs after the reply was handed to the transport, removes it. (gRPC's own
// health service is not counted: it never holds our work.)
// A call the server has received is not always in a handler yet: it waits
// in the server's queue until one of the synchronous server's threads takes
// it, and nothing of ours can see it there. So once the last call is
// answered the tracker closes, in the same step: a call reaching a handler
// after that is refused before it starts (enter() returns false), because
// the Shutdown(now) that follows would cut it off mid-work.
class CallTracker final : public grpc::Server::GlobalCallbacks {
 public:
  bool enter(grpc::ServerContext* context) {
    std::lock_guard lock(mu_);
    if (closed_) return false;
    active_.insert(context);
    return true;
  }
  void PreSynchronousRequest(grpc::ServerContext*) override {}
  void PostSynchronousRequest(grpc::ServerContext* context) override {
    std::lock_guard lock(mu_);
    if (active_.erase(context) == 1 && active_.empty()) idle_.notify_all();
  }
  // Waits until every call was answered or the deadline passed, then lets
  // no call in any more. Returns how many are still running.
  std::size_t close_when_idle(steady_clock::time_point deadline) {
    std::unique_lock lock(mu_);
    idle_.wait_until(lock, deadline, [this] { return active_.empty(); });
    closed_ = true;
    return active_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  std::set<grpc::ServerContext*> active_;
  bool closed_ = false;
};
// docs:end tracker

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
  WorkerService(ledger::RedisLedger& ledger, StopState& stop, CallTracker& calls)
      : ledger_(ledger), stop_(stop), calls_(calls) {}

  // docs:begin work
  grpc::Status Work(grpc::ServerContext* context, const WorkRequest* request, WorkReply* reply) override {
    if (!calls_.enter(context)) return refused("work id=" + request->id());
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
    if (!calls_.enter(context)) return refused("stream id=" + request->id());
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
  // A call that reached a thread after our last call was answered: nothing
  // of it ran. UNAVAILABLE, as for any call a stopping server does not take.
  static grpc::Status refused(const std::string& what) {
    std::printf("refused: %s, not started (after our last call)\n", what.c_str());
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "server stopping: call not started");
  }

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
  CallTracker& calls_;
};

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv, "usage: 060-connection-age [--listen IPV4] [--port N (0 = any)] "
                       "[--redis HOST:PORT] "
                       "[--shutdown-timeout-ms MS] [--drain-ms MS (< timeout)] "
                       "[--max-connection-age-ms MS] [--max-connection-age-grace-ms MS]");
  const std::string listen = flags.ipv4("--listen");  // default 127.0.0.1
  const int port = flags.port("--port", 50051);
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  const milliseconds shutdown_timeout = flags.millis("--shutdown-timeout-ms", 5000, 1, 600'000);
  const milliseconds drain = flags.millis("--drain-ms", 1000, 0, 600'000);
  // docs:begin age-flags
  // Every 5 minutes a caller reconnects and is placed again; the grace
  // covers the longest Work call (60 s, see below).
  const milliseconds max_age = flags.millis("--max-connection-age-ms", 300'000, 1, 86'400'000);
  const milliseconds max_age_grace = flags.millis("--max-connection-age-grace-ms", 60'000, 0, 86'400'000);
  // docs:end age-flags
  flags.done();
  if (drain >= shutdown_timeout)
    support::Flags::fail("--drain-ms", "must be shorter than --shutdown-timeout-ms (the budget includes the drain)");
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
  // gRPC 1.51 keeps the hooks in a shared_ptr and deletes them at exit
  // (whatever its header says): hand it a heap object.
  auto* calls = new CallTracker;
  grpc::Server::SetGlobalCallbacks(calls);
  grpc::EnableDefaultHealthCheckService(true);  // grpc.health.v1, "" = SERVING
  grpc::ServerBuilder builder;
  int bound_port = 0;
  builder.AddListeningPort(listen + ":" + std::to_string(port), grpc::InsecureServerCredentials(), &bound_port);
  // gRPC sets SO_REUSEPORT by default: a second server on a busy port would
  // start and silently share it. Refuse instead, like any other server.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // docs:begin age
  // Each connection gets a GOAWAY once it is max_age old (gRPC adds +/-10 %
  // jitter), and is closed max_age_grace later if calls still hold it.
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS, static_cast<int>(max_age.count()));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS, static_cast<int>(max_age_grace.count()));
  // docs:end age
  StopState stop_state;
  WorkerService service(ledger, stop_state, *calls);
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
      std::printf("shutdown: SIG%s received, %lld ms budget\n", sigabbrev_np(sig),
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
  // docs:begin drain
  // Announce first, keep serving while the announcement spreads, then stop.
  // Shutdown(), not SetServingStatus(false): every service turns NOT_SERVING
  // and stays so (a later SetServingStatus(true) is ignored). Watch streams
  // get the update and stay open: a client must end its own.
  server->GetHealthCheckService()->Shutdown();
  std::printf("shutdown: health NOT_SERVING, draining for %lld ms\n", static_cast<long long>(drain.count()));
  std::this_thread::sleep_for(drain);
  // docs:end drain
  // docs:begin last-call
  // GOAWAY now, through gRPC's C core, exactly as Shutdown() begins (it
  // calls the same function, and a second call only adds a notification):
  // the listener closes, every caller sends its next calls elsewhere, and
  // ours in flight go on. Shutdown() itself would then also wait for every
  // connection to close, idle ones included; here we wait only for ours.
  grpc_completion_queue* shutdown_done = grpc_completion_queue_create_for_next(nullptr);
  grpc_server_shutdown_and_notify(server->c_server(), shutdown_done, nullptr);
  std::printf("shutdown: drain over, GOAWAY sent, waiting for our calls in flight\n");
  const std::size_t left = calls->close_when_idle(started + shutdown_timeout);
  std::printf("shutdown: %zu call(s) of ours left, Shutdown(now)\n", left);
  // Shutdown(now) cancels "all calls": gRPC disconnects every connection,
  // idle ones too. At the deadline that cuts off what is left of ours; the
  // handlers see IsCancelled().
  server->Shutdown(std::chrono::system_clock::now());
  // The C core's notification: taken and thrown away, then the queue goes.
  grpc_completion_queue_shutdown(shutdown_done);
  while (grpc_completion_queue_next(shutdown_done, gpr_inf_future(GPR_CLOCK_REALTIME), nullptr).type !=
         GRPC_QUEUE_SHUTDOWN) {
  }
  grpc_completion_queue_destroy(shutdown_done);
  // docs:end last-call
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
