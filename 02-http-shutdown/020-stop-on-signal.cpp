// 020-stop-on-signal: SIGTERM stops the HTTP server instead of killing it.
//
// Demonstrates: 010 plus a dedicated signal thread. SIGTERM/SIGINT are
//   blocked before any thread exists and taken with sigwaitinfo() on that
//   thread, which calls cpp-httplib's stop(): the listener closes, requests
//   being handled finish and their clients get a response, then
//   listen_after_bind() returns and main() returns 0. This is what the seed's
//   `server.Shutdown()` gives before the WaitGroup is added.
// Still wrong: nothing waits for the background writes. They run on detached
//   threads that die with the process when main() returns: every write
//   acknowledged during the last --work-ms is lost, with exit status 0 and
//   nothing on stderr. No deadline either: a handler that never returns keeps
//   the process alive forever, and a second signal is ignored. Readiness
//   never turns 503, and an idle keep-alive connection is still served after
//   stop() (and holds the exit for up to the 5 s keep-alive timeout), and a
//   connection still queued for a worker thread at stop() is closed unread.
// Reproduces: seed 003, handling SIGTERM is not enough: "the running
//   processRequest goroutines are terminated too"; seed 004, Shutdown closes
//   the listener and waits for active connections only.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <thread>

#include "incr.hpp"
#include "support/flags.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Everything a background write uses. Held by shared_ptr: a detached write
// thread may outlive main().
struct State {
  State(std::string host, int port, std::ptrdiff_t max_pending)
      : redis(std::move(host), port), slots(max_pending) {}
  incr::Redis redis;
  // At most --max-pending background writes at a time. A thread per request
  // is the seed's goroutine per request; unbounded, a load test that outruns
  // Redis piles up tens of thousands of threads. A full house makes the
  // handler wait: the client sees a slower 200, never a lie.
  std::counting_semaphore<> slots;
  std::chrono::milliseconds work{};
  bool trace = false;
};

// docs:begin background-write
// The seed's processRequest: sleep, then write. Runs on a detached thread,
// like a goroutine nobody waits for.
void background_write(std::shared_ptr<State> state, std::string id) {
  std::this_thread::sleep_for(state->work);
  if (auto why = state->redis.persist(id); !why.empty())
    std::fprintf(stderr, "write: id=%s failed: %s\n", id.c_str(), why.c_str());
  else if (state->trace)
    std::printf("write: id=%s persisted\n", id.c_str());
  state->slots.release();
}
// docs:end background-write

// docs:begin signal-thread
// Taken by sigwaitinfo() on the signal thread, never by a handler: stop()
// takes locks and closes sockets, which a signal handler must not do.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

void signal_thread(httplib::Server& svr, Clock::time_point& signalled) {
  const sigset_t set = stop_signals();
  siginfo_t info{};
  int sig = -1;
  while (sig < 0) sig = sigwaitinfo(&set, &info);  // retry on EINTR
  signalled = Clock::now();
  std::printf("shutdown: SIG%s from pid %d, stopping the listener\n", sigabbrev_np(sig), info.si_pid);
  // stop() is a no-op until listen_after_bind() has marked the server as
  // running: a signal right after "ready" must not fall into that gap.
  while (!svr.is_running()) std::this_thread::sleep_for(1ms);
  svr.stop();
  std::printf("shutdown: listener closed\n");
  // Returns: a second signal stays blocked and pending, i.e. ignored.
}
// docs:end signal-thread

// SO_REUSEADDR only: the library's default also sets SO_REUSEPORT, which
// would let a second instance share the port silently instead of failing.
void reuse_address_only(socket_t sock) {
  int yes = 1;
  ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 020-stop-on-signal [--listen ADDR] [--port N] [--redis HOST:PORT] [--work-ms MS] "
                       "[--handler-ms MS] [--threads N] [--keep-alive-max N] [--max-pending N] [--trace]");
  const std::string listen = flags.ipv4("--listen");
  const int port = flags.port("--port", 8080);
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  const auto work = flags.millis("--work-ms", 5000, 0, 3'600'000);
  const auto handler_time = flags.millis("--handler-ms", 0, 0, 3'600'000);
  const auto threads = flags.integer("--threads", 16, 1, 1024);
  const auto keep_alive_max = flags.integer("--keep-alive-max", 5, 1, 100'000);  // requests per connection
  const auto max_pending = static_cast<std::ptrdiff_t>(flags.integer("--max-pending", 256, 1, 100'000));
  const bool trace = flags.present("--trace");
  flags.done();

  ::signal(SIGPIPE, SIG_IGN);  // a client gone mid-response must not kill us
  // docs:begin block
  // Block before any thread exists: every thread inherits the mask, so the
  // signals wait for sigwaitinfo() on the signal thread.
  const sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // docs:end block

  auto state = std::make_shared<State>(redis_host, redis_port, max_pending);
  state->work = work;
  state->trace = trace;
  if (auto why = state->redis.connect(); !why.empty()) {
    std::fprintf(stderr, "error: --redis: cannot reach Redis at %s:%d: %s\n", redis_host.c_str(), redis_port,
                 why.c_str());
    return 1;
  }

  httplib::Server svr;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<std::size_t>(threads)); };
  svr.set_socket_options(reuse_address_only);
  // Headers and body leave in two writes: without TCP_NODELAY, Nagle's
  // algorithm and the client's delayed ACK add 40 ms to keep-alive responses.
  svr.set_tcp_nodelay(true);
  svr.set_keep_alive_max_count(static_cast<std::size_t>(keep_alive_max));

  // docs:begin incr
  auto incr = [state, handler_time](const httplib::Request& req, httplib::Response& res) {
    if (auto why = incr::bad_id(req); !why.empty()) {
      res.status = 400;
      res.set_content(why + "\n", "text/plain");
      return;
    }
    std::string id = req.get_param_value("id");
    if (state->trace) std::printf("incr: id=%s started\n", id.c_str());
    std::this_thread::sleep_for(handler_time);  // request processing (0 unless a test asks)
    state->slots.acquire();  // waits while --max-pending writes are in flight
    std::thread(background_write, state, id).detach();  // go processRequest(redisdb)
    res.set_content("ok id=" + id + "\n", "text/plain");
  };
  // docs:end incr
  svr.Post("/incr", incr);  // it changes state: never a GET, which clients and proxies retry
  svr.Get("/incr", [](const httplib::Request&, httplib::Response& res) {
    res.status = 405;
    res.set_header("Allow", "POST");
    res.set_content("use POST /incr?id=ID\n", "text/plain");
  });
  svr.Get("/healthz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ok\n", "text/plain"); });
  svr.Get("/readyz", [](const httplib::Request&, httplib::Response& res) { res.set_content("ready\n", "text/plain"); });

  const int bound = port == 0 ? svr.bind_to_any_port(listen) : (svr.bind_to_port(listen, port) ? port : -1);
  if (bound < 0) {
    std::fprintf(stderr, "error: --port: cannot listen on %s:%d (address in use?)\n", listen.c_str(), port);
    return 2;
  }
  Clock::time_point signalled{};  // written by the signal thread, read after join()
  std::thread signals(signal_thread, std::ref(svr), std::ref(signalled));
  std::printf("ready port=%d pid=%d\n", bound, ::getpid());
  // docs:begin listen
  if (!svr.listen_after_bind()) {
    std::fprintf(stderr, "error: the HTTP server failed\n");
    std::_Exit(1);  // the signal thread is still waiting; do not join it
  }
  signals.join();
  // In-flight requests have been answered. Background writes have not been
  // waited for: returning from main() ends their detached threads.
  const auto stopped = Clock::now();
  // docs:end listen
  std::printf("shutdown: complete in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(stopped - signalled).count()));
  return 0;
}
