// 030-track-background-work: wait for every accepted write, then close
// Redis, then exit.
//
// Demonstrates: 020 plus a tracker, a WaitGroup that knows its ids. Each
//   /incr is added before its 200 is sent and done when its background write
//   has finished; after the listener is closed and in-flight requests are
//   answered, main() waits for the tracker to empty and closes the Redis
//   connection last. Nothing acknowledged is lost while Redis answers; a
//   write Redis refuses is named on stderr and the exit status is 1.
// Still wrong: the wait has no deadline. A handler or a write that never
//   finishes keeps the process alive until the orchestrator's SIGKILL, and a
//   second signal is ignored. Readiness never turns 503, and an idle
//   keep-alive connection is still served after stop() (and holds the exit
//   for up to the 5 s keep-alive timeout). With more keep-alive clients
//   than --threads, a connection queued for a worker at stop() is closed
//   unread. A write that fails once is not retried.
// Reproduces: seed 003's fix, sync.WaitGroup + wg.Wait() + redisdb.Close():
//   "all 1000 requests were processed correctly".
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <semaphore>
#include <string>
#include <thread>
#include <vector>

#include "incr.hpp"
#include "support/flags.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// docs:begin tracker
// A WaitGroup that knows what it waits for. Every accepted /incr is added
// before its 200 is sent and marked done when its write has finished, so
// "empty" means: every acknowledged id has been persisted (or reported).
class Tracker {
 public:
  std::uint64_t add(const std::string& id) {
    std::lock_guard lock(mu_);
    pending_.emplace(++next_, id);
    return next_;
  }
  // ok = false: the write failed, and the id was acknowledged all the same.
  void done(std::uint64_t token, bool ok = true) {
    std::lock_guard lock(mu_);
    if (auto it = pending_.find(token); it != pending_.end() && !ok) failed_.push_back(it->second);
    pending_.erase(token);
    if (pending_.empty()) idle_.notify_all();
  }
  std::vector<std::string> failed() {
    std::lock_guard lock(mu_);
    return failed_;
  }
  std::size_t size() {
    std::lock_guard lock(mu_);
    return pending_.size();
  }
  void wait() {
    std::unique_lock lock(mu_);
    idle_.wait(lock, [this] { return pending_.empty(); });
  }

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  std::map<std::uint64_t, std::string> pending_;  // token -> id
  std::vector<std::string> failed_;                // acknowledged ids whose write failed
  std::uint64_t next_ = 0;
};
// docs:end tracker

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
  Tracker tracker;
  std::chrono::milliseconds work{};
  bool trace = false;
};

// docs:begin background-write
// The seed's processRequest with `defer wg.Done()`: still a detached thread,
// but main() now waits for the tracker before it returns.
void background_write(std::shared_ptr<State> state, std::string id, std::uint64_t token) {
  std::this_thread::sleep_for(state->work);
  const auto why = state->redis.persist(id);
  if (!why.empty())
    std::fprintf(stderr, "write: id=%s failed: %s\n", id.c_str(), why.c_str());
  else if (state->trace)
    std::printf("write: id=%s persisted\n", id.c_str());
  state->slots.release();
  state->tracker.done(token, why.empty());  // last: after this, main() may close Redis
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
                       "usage: 030-track-background-work [--listen ADDR] [--port N] [--redis HOST:PORT] [--work-ms MS] "
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
    const auto token = state->tracker.add(id);  // wg.Add(1), before anything can fail or answer
    if (state->trace) std::printf("incr: id=%s started\n", id.c_str());
    std::this_thread::sleep_for(handler_time);  // request processing (0 unless a test asks)
    state->slots.acquire();  // waits while --max-pending writes are in flight
    try {
      std::thread(background_write, state, id, token).detach();
    } catch (...) {
      state->slots.release();
      state->tracker.done(token);  // no thread, no write: the client gets a 500
      throw;
    }
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
  // In-flight requests have been answered; no new one can be accepted, so
  // nothing can be added to the tracker any more.
  std::printf("shutdown: waiting for %zu background writes\n", state->tracker.size());
  state->tracker.wait();  // wg.Wait()
  state->redis.close();   // redisdb.Close(): last, nothing writes any more
  std::printf("shutdown: redis connection closed\n");
  const auto stopped = Clock::now();
  // An acknowledged write that failed is lost work: name it, and say so in
  // the exit status (an orchestrator or a script sees only that).
  const auto failed = state->tracker.failed();
  for (const auto& id : failed) std::fprintf(stderr, "lost: id=%s (acknowledged, write failed)\n", id.c_str());
  // docs:end listen
  std::printf("shutdown: complete in %lld ms, %zu acknowledged writes lost\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(stopped - signalled).count()),
              failed.size());
  return failed.empty() ? 0 : 1;
}
