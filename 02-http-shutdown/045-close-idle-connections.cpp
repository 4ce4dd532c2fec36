// 045-close-idle-connections: at the stop, every connection is either
// served or closed, at once.
//
// Demonstrates: 040 plus the per-connection loop run by the server itself.
//   When the listener closes, connections waiting for a request close at
//   once instead of lingering up to cpp-httplib's 5 s keep-alive timeout,
//   each by the thread that serves it: a request is either read, executed
//   and answered, or never read. Connections still queued for a worker are
//   served, not dropped, and every response from then on carries one
//   "Connection: close" and really closes its connection. The rest is 040:
//   wait for requests and writes within --shutdown-timeout-ms, cancel near
//   the deadline, report what is abandoned, Redis last.
// Still wrong: it stops taking traffic abruptly. Readiness never turns 503,
//   so a load balancer that has not yet removed the instance keeps sending
//   requests, refused the moment the listener closes at SIGTERM. A request
//   that arrives on an idle keep-alive connection in the instant it is
//   closed is not executed and its client sees the connection close
//   (inherent to HTTP keep-alive; Go's closeIdleConns has it too).
// Reproduces: seed 004's closeIdleConns step of Go's Shutdown.
#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
// A WaitGroup that knows what it waits for, and how far each item got, so
// that whatever the deadline abandons can be reported by id.
class Tracker {
 public:
  std::uint64_t add(const std::string& id) {
    std::lock_guard lock(mu_);
    pending_.emplace(++next_, Item{id, "handling the request"});
    return next_;
  }
  void set_phase(std::uint64_t token, std::string phase) {
    std::lock_guard lock(mu_);
    if (auto it = pending_.find(token); it != pending_.end()) it->second.phase = std::move(phase);
  }
  void done(std::uint64_t token) {
    std::lock_guard lock(mu_);
    pending_.erase(token);
    if (pending_.empty()) idle_.notify_all();
  }
  // It gave up when the deadline asked it to: not done, but not running.
  void cancelled(std::uint64_t token) {
    std::lock_guard lock(mu_);
    if (auto it = pending_.find(token); it != pending_.end())
      cancelled_.push_back("id=" + it->second.id + " (" + it->second.phase + ")");
    pending_.erase(token);
    if (pending_.empty()) idle_.notify_all();
  }
  std::vector<std::string> cancelled_items() {
    std::lock_guard lock(mu_);
    return cancelled_;
  }
  std::size_t size() {
    std::lock_guard lock(mu_);
    return pending_.size();
  }
  // True when everything finished before the deadline.
  bool wait_until(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    return idle_.wait_until(lock, deadline, [this] { return pending_.empty(); });
  }
  // What is still pending: "id=... (phase)" lines in the order accepted.
  std::vector<std::string> pending() {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    for (const auto& [token, item] : pending_) out.push_back("id=" + item.id + " (" + item.phase + ")");
    return out;
  }

 private:
  struct Item {
    std::string id;
    std::string phase;
  };
  std::mutex mu_;
  std::condition_variable idle_;
  std::map<std::uint64_t, Item> pending_;  // token -> what and how far
  std::vector<std::string> cancelled_;     // given up at the deadline's request
  std::uint64_t next_ = 0;
};
// docs:end tracker

// A connection as cpp-httplib's request parser reads and writes it: every
// read and write bounded by the server's timeouts. The parser reads a byte
// at a time, so reads go through a buffer (a syscall per byte costs half the
// throughput); bytes in it were read from the socket already, so "is a
// request there?" asks the buffer first, then the socket.
class SocketStream final : public httplib::Stream {
 public:
  SocketStream(socket_t sock, long long read_ms, long long write_ms)
      : sock_(sock), read_ms_(static_cast<int>(read_ms)), write_ms_(static_cast<int>(write_ms)) {}
  using httplib::Stream::write;
  bool is_readable() const override { return buffered() || ready(POLLIN, read_ms_); }
  bool is_writable() const override { return ready(POLLOUT, write_ms_); }
  ssize_t read(char* ptr, size_t size) override {
    if (!buffered()) {
      if (!is_readable()) return -1;
      ssize_t n = 0;
      do n = ::recv(sock_, buf_, sizeof buf_, 0);
      while (n < 0 && errno == EINTR);
      if (n <= 0) return n;
      begin_ = 0;
      end_ = static_cast<std::size_t>(n);
    }
    const std::size_t k = std::min(size, end_ - begin_);
    std::memcpy(ptr, buf_ + begin_, k);
    begin_ += k;
    return static_cast<ssize_t>(k);
  }
  bool buffered() const { return begin_ < end_; }
  ssize_t write(const char* ptr, size_t size) override {
    if (!is_writable()) return -1;
    ssize_t n = 0;
    do n = ::send(sock_, ptr, size, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(::getpeername, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(::getsockname, ip, port); }
  socket_t socket() const override { return sock_; }
  int peer_port() const {
    std::string ip;
    int port = 0;
    get_remote_ip_and_port(ip, port);
    return port;
  }

 private:
  bool ready(short events, int ms) const {
    pollfd fd{sock_, events, 0};
    int n = 0;
    do n = ::poll(&fd, 1, ms);
    while (n < 0 && errno == EINTR);
    return n > 0;
  }
  void address(int (*get)(int, sockaddr*, socklen_t*), std::string& ip, int& port) const {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    char text[INET_ADDRSTRLEN] = "";
    if (get(sock_, reinterpret_cast<sockaddr*>(&a), &len) == 0 && a.sin_family == AF_INET) {
      ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
      port = ntohs(a.sin_port);
    }
    ip = text;
  }
  socket_t sock_;
  int read_ms_, write_ms_;
  char buf_[4096];
  std::size_t begin_ = 0, end_ = 0;  // unread bytes: buf_[begin_, end_)
};

// docs:begin connections
// cpp-httplib 0.11 serves each connection in a loop that stops at stop()
// without reading what is already there: a connection still queued for a
// worker thread is closed unread (its request, sent before the signal, gets
// EOF), while an idle keep-alive connection waits up to 5 s and serves a
// request that arrives meanwhile. Its socket cannot be closed from outside
// without a race (a request read in that instant is executed and its
// response lost). So this server runs the per-connection loop itself: the
// thread that owns the connection decides, at one instant, between "a
// request is there: read, execute and answer it" and "nothing is there:
// close it unread", and a request that arrives after that instant is never
// read, so never executed (the client sees the close and may retry).
class DrainingServer : public httplib::Server {
 public:
  DrainingServer() : wake_(::eventfd(0, EFD_CLOEXEC)) {}
  ~DrainingServer() override { ::close(wake_); }
  DrainingServer(const DrainingServer&) = delete;
  DrainingServer& operator=(const DrainingServer&) = delete;

  // Connections waiting for a request (idle, or new and still empty) close
  // now, unread; a request that is there already is still served, last.
  void close_idle() {
    draining_ = true;
    const std::uint64_t one = 1;
    if (::write(wake_, &one, sizeof one) != sizeof one) std::abort();  // stays readable: wakes every waiter
  }
  bool trace = false;

 private:
  bool process_and_close_socket(socket_t sock) override {
    SocketStream stream(sock, read_timeout_sec_ * 1000 + read_timeout_usec_ / 1000,
                        write_timeout_sec_ * 1000 + write_timeout_usec_ / 1000);
    bool ok = true;
    for (std::size_t served = 0; served < keep_alive_max_count_;) {
      if (!next_request_is_there(sock, stream)) {
        if (trace) std::printf("conn: port=%d closed while idle\n", stream.peer_port());
        break;
      }
      const bool last = ++served == keep_alive_max_count_ || draining_;
      bool client_closes = false;
      ok = process_request(stream, last, client_closes, nullptr);  // last: "Connection: close", once
      if (!ok || last || client_closes) break;
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }

  // True when there is something to read (a request, or the client's EOF);
  // false when the connection waited out the keep-alive timeout, or the
  // drain closes idle connections and nothing is there. Data wins.
  bool next_request_is_there(socket_t sock, const SocketStream& stream) {
    if (stream.buffered()) return true;  // read already (pipelined): serve it
    if (trace) std::printf("conn: port=%d waiting for a request\n", stream.peer_port());
    pollfd fds[2] = {{sock, POLLIN, 0}, {wake_, POLLIN, 0}};
    int n = 0;
    do n = ::poll(fds, 2, static_cast<int>(keep_alive_timeout_sec_ * 1000));
    while (n < 0 && errno == EINTR);
    return n > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
  }

  std::atomic<bool> draining_{false};
  const int wake_;  // an eventfd, written once by close_idle()
};
// docs:end connections

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
  // "the deadline is near, give up": requested by main(), honoured by every
  // wait in a handler or a write (Go cancels the requests' contexts so).
  std::stop_source cancel;
  std::chrono::milliseconds work{};
  bool trace = false;
};

// docs:begin cancel
// Sleeps for `d` unless cancellation is requested first: true when it slept
// in full. Every wait in a handler or a write goes through here.
bool sleep_unless_cancelled(std::chrono::milliseconds d, std::stop_token cancel) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, cancel, d, [] { return false; });
  return !cancel.stop_requested();
}
// docs:end cancel

// docs:begin background-write
// The seed's processRequest, with retries: a write that fails (Redis
// restarting, unreachable) is retried with backoff until it succeeds or the
// shutdown deadline abandons it and reports its id. Never dropped silently.
void background_write(std::shared_ptr<State> state, std::string id, std::uint64_t token) {
  const auto cancel = state->cancel.get_token();
  state->tracker.set_phase(token, "waiting --work-ms before writing");
  bool go_on = sleep_unless_cancelled(state->work, cancel);
  auto backoff = 50ms;
  for (int attempt = 1; go_on; ++attempt) {
    state->tracker.set_phase(token, "writing, attempt " + std::to_string(attempt));
    const auto why = state->redis.persist(id);  // cannot be cancelled: bounded by the Redis timeout
    if (why.empty()) break;
    state->tracker.set_phase(token, "write failed " + std::to_string(attempt) + " times: " + why);
    std::fprintf(stderr, "write: id=%s failed (%s), retrying in %lld ms\n", id.c_str(), why.c_str(),
                 static_cast<long long>(backoff.count()));
    go_on = sleep_unless_cancelled(backoff, cancel);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  state->slots.release();
  if (!go_on) return state->tracker.cancelled(token);  // main() reports it
  if (state->trace) std::printf("write: id=%s persisted\n", id.c_str());
  state->tracker.done(token);  // last: after this, main() may close Redis
}
// docs:end background-write

// docs:begin abandon
// What the deadline's cancellation stopped, and what still runs and is given
// up, by id. Exit 1 without running destructors, which could wait for the
// very threads that are stuck.
void report_cancelled(State& state) {
  for (const auto& item : state.tracker.cancelled_items()) std::fprintf(stderr, "cancelled: %s\n", item.c_str());
}
[[noreturn]] void abandon(State& state, const std::string& why) {
  const auto pending = state.tracker.pending();
  std::printf("shutdown: %s, forcing exit: %zu cancelled, %zu abandoned while still running\n", why.c_str(),
              state.tracker.cancelled_items().size(), pending.size());
  report_cancelled(state);
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
                       "usage: 045-close-idle-connections [--listen ADDR] [--port N] [--redis HOST:PORT] [--work-ms MS] "
                       "[--handler-ms MS] [--threads N] [--keep-alive-max N] [--max-pending N] [--trace] "
                       "[--shutdown-timeout-ms MS]");
  const std::string listen = flags.ipv4("--listen");
  const int port = flags.port("--port", 8080);
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  const auto work = flags.millis("--work-ms", 5000, 0, 3'600'000);
  const auto handler_time = flags.millis("--handler-ms", 0, 0, 3'600'000);
  const auto threads = flags.integer("--threads", 16, 1, 1024);
  const auto keep_alive_max = flags.integer("--keep-alive-max", 5, 1, 100'000);  // requests per connection
  const auto max_pending = static_cast<std::ptrdiff_t>(flags.integer("--max-pending", 256, 1, 100'000));
  const bool trace = flags.present("--trace");
  const auto shutdown_timeout = flags.millis("--shutdown-timeout-ms", 10'000, 1, 3'600'000);
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

  DrainingServer svr;
  svr.trace = trace;
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
    // Request processing (0 unless a test asks), then a slot for the write
    // (while --max-pending writes are in flight): both waits end when the
    // deadline cancels, and nothing has been done then: the client is told.
    const auto cancel = state->cancel.get_token();
    bool go_on = sleep_unless_cancelled(handler_time, cancel);
    while (go_on && !state->slots.try_acquire_for(10ms)) go_on = !cancel.stop_requested();
    if (!go_on) {
      state->tracker.cancelled(token);
      res.status = 503;
      res.set_content("cancelled: the server is shutting down\n", "text/plain");
      return;
    }
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
  const auto deadline = signalled + shutdown_timeout;
  svr.stop();
  svr.close_idle();
  std::printf("shutdown: listener closed, idle connections closed, waiting up to %lld ms for %zu requests\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()),
              state->tracker.size());
  // In-flight requests first (listen_after_bind() returns once they are
  // answered), then background writes: both against the same deadline.
  // Near the deadline (its last tenth, at most 500 ms), cancel: handlers
  // and writes that wait give up and say so. At the deadline, abandon what
  // still runs.
  const auto cancel_at = deadline - std::min(shutdown_timeout / 10, std::chrono::milliseconds(500));
  const auto all_done = [&](Clock::time_point t) {
    return listening.wait_until(t) == std::future_status::ready && state->tracker.wait_until(t);
  };
  if (!all_done(cancel_at)) {
    state->cancel.request_stop();
    if (!all_done(deadline)) abandon(*state, "deadline of " + std::to_string(shutdown_timeout.count()) + " ms exceeded");
  }
  state->redis.close();  // last: nothing writes any more
  std::printf("shutdown: redis connection closed\n");
  const auto stopped = Clock::now();
  const auto cancelled = state->tracker.cancelled_items().size();
  if (cancelled > 0) {
    std::printf("shutdown: deadline of %lld ms: %zu cancelled, 0 abandoned\n",
                static_cast<long long>(shutdown_timeout.count()), cancelled);
    report_cancelled(*state);
  }
  // docs:end shutdown
  std::printf("shutdown: complete in %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(stopped - signalled).count()));
  signals.request_stop();
  pthread_kill(signals.native_handle(), SIGUSR1);  // wake sigwaitinfo(); the jthread joins it
  return cancelled == 0 ? 0 : 1;  // work given up is not a clean stop
}
