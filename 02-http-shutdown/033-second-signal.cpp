// 033-second-signal: main() does the stopping; a second signal forces the
// exit and names what it abandons.
//
// Demonstrates: 030 with the stop moved out of the signal thread. The first
//   SIGTERM/SIGINT only requests the stop (a std::stop_source); main()
//   waits for that request, closes the listener, waits for requests and
//   writes and closes Redis, as 030 did. The signal thread keeps listening:
//   once the first signal was taken, any further SIGTERM/SIGINT forces exit
//   1 at once and lists on stderr, by id, the work still pending
//   (kube-apiserver's rule), so an operator can cut a stuck stop short
//   without SIGKILL's silence. main() no longer runs the listener, so a
//   thread watches it: if it fails before a stop was asked for, exit 1.
// Still wrong: the wait has no deadline of its own: a handler or a write
//   that never finishes keeps the process alive until a second signal or
//   the orchestrator's SIGKILL. Readiness never turns 503, and an idle
//   keep-alive connection is still served after stop() (and holds the exit
//   for up to the 5 s keep-alive timeout). With more keep-alive clients
//   than --threads, a connection queued for a worker at stop() is closed
//   unread. A write that fails once is not retried.
// Reproduces: seed 002's kube-apiserver SetupSignalContext (a second signal
//   exits with status 1).
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <semaphore>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
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
  // What is still pending: "id=..." lines in the order accepted.
  std::vector<std::string> pending() {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [token, id] : pending_) out.push_back("id=" + id);
    return out;
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
  std::stop_source stop;  // "please stop": requested by the signal thread, awaited by main()
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

// docs:begin abandon
// What still runs is given up, by id. Exit 1 without running destructors,
// which could wait for the very threads that are stuck.
[[noreturn]] void abandon(State& state, const std::string& why) {
  const auto pending = state.tracker.pending();
  std::printf("shutdown: %s, forcing exit: %zu abandoned while still running\n", why.c_str(), pending.size());
  for (const auto& item : pending) std::fprintf(stderr, "abandoned: %s\n", item.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(1);
}
// docs:end abandon

// docs:begin signal-thread
// Taken by sigwaitinfo() on the signal thread, never by a handler. SIGUSR1
// only wakes that thread when main() is done.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGUSR1}) sigaddset(&set, sig);
  return set;
}

// The first SIGTERM/SIGINT requests the stop; main() does the stopping. Any
// later one forces the exit, as kube-apiserver's SetupSignalHandler does.
void signal_loop(std::stop_token finished, std::shared_ptr<State> state) {
  const sigset_t set = handled_signals();
  while (!finished.stop_requested()) {
    siginfo_t info{};
    const int sig = sigwaitinfo(&set, &info);
    if (sig < 0 || sig == SIGUSR1) continue;  // EINTR, or main() waking us to finish
    if (state->stop.request_stop()) {
      std::printf("shutdown: SIG%s from pid %d, stopping (send it again to force the exit)\n", sigabbrev_np(sig),
                  info.si_pid);
    } else {
      abandon(*state, std::string("second SIG") + sigabbrev_np(sig));
    }
  }
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
                       "usage: 033-second-signal [--listen ADDR] [--port N] [--redis HOST:PORT] [--work-ms MS] "
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
  const sigset_t set = handled_signals();
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
  std::jthread signals(signal_loop, state);
  // The listener is watched for the whole run: if it fails before a stop
  // was asked for, the process would live on serving nothing.
  auto listening = std::async(std::launch::async, [&svr, state] {
    const bool ok = svr.listen_after_bind();
    if (!state->stop.stop_requested()) {
      std::fprintf(stderr, "error: the HTTP server stopped serving\n");
      std::_Exit(1);
    }
    return ok;
  });
  while (!svr.is_running()) {  // stop() is a no-op until the server runs
    if (listening.wait_for(1ms) == std::future_status::ready) {
      std::fprintf(stderr, "error: the HTTP server failed to start\n");
      std::_Exit(1);
    }
  }
  std::printf("ready port=%d pid=%d\n", bound, ::getpid());

  // docs:begin shutdown
  {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    cv.wait(lock, state->stop.get_token(), [] { return false; });  // until the signal thread asks
  }
  const auto signalled = Clock::now();
  svr.stop();
  std::printf("shutdown: listener closed, waiting for %zu requests\n", state->tracker.size());
  // In-flight requests have been answered once listen_after_bind() returns;
  // no new one can be accepted, so nothing can be added to the tracker any more.
  listening.wait();
  state->tracker.wait();  // wg.Wait()
  state->redis.close();   // redisdb.Close(): last, nothing writes any more
  std::printf("shutdown: redis connection closed\n");
  const auto stopped = Clock::now();
  // An acknowledged write that failed is lost work: name it, and say so in
  // the exit status (an orchestrator or a script sees only that).
  const auto failed = state->tracker.failed();
  for (const auto& id : failed) std::fprintf(stderr, "lost: id=%s (acknowledged, write failed)\n", id.c_str());
  // docs:end shutdown
  std::printf("shutdown: complete in %lld ms, %zu acknowledged writes lost\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(stopped - signalled).count()),
              failed.size());
  signals.request_stop();
  pthread_kill(signals.native_handle(), SIGUSR1);  // wake sigwaitinfo(); the jthread joins it
  return failed.empty() ? 0 : 1;
}
