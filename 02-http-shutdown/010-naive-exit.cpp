// 010-naive-exit: the seed 003 experiment server, as first written.
//
// Demonstrates: POST /incr?id=ID answers 200 at once and does the real work
//   in the background after --work-ms: SADD the id to a set and INCR a
//   counter in Redis, like the seed's `go processRequest(redisdb)` (one
//   script, incr.hpp: a repeated id is not counted twice).
// Still wrong: there is no signal handling at all. SIGTERM's default action
//   kills the process on the spot: every write acknowledged during the last
//   --work-ms is lost, a request being handled is cut off (the client reads a
//   reset), and readiness never says "stop sending me traffic".
// Reproduces: seed 003's first run, a rolling update during 1000 requests
//   "and the counter is less than 1000".
#include <httplib.h>
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
                       "usage: 010-naive-exit [--listen ADDR] [--port N] [--redis HOST:PORT] [--work-ms MS] "
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
  std::printf("ready port=%d pid=%d\n", bound, ::getpid());
  // docs:begin listen
  svr.listen_after_bind();  // runs until the process is killed: nothing ever calls stop()
  // docs:end listen
  return 0;
}
