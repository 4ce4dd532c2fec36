// The scenarios of chapter 02, shared by the tests (which assert on them)
// and the tour (which prints them), so both show the same measurements.
//
// Every scenario starts its own redis-server and stage, waits for the ready
// line, sends real HTTP traffic and delivers SIGTERM at a moment where the
// work is known to be pending (a 200 received, or a "started" line printed
// by the handler), then waits for the exit with a bound.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "load/load.hpp"
#include "testkit/process.hpp"
#include "testkit/redis.hpp"

namespace ch02 {

using testkit::milliseconds;

std::string stage(const std::string& name);    // path of a binary of this chapter
extern const std::vector<std::string> kStages;  // 010 .. 050
bool second_signal_forces_exit(const std::string& name);  // 033 on
bool has_deadline(const std::string& name);     // 036 on: --shutdown-timeout-ms
bool cancels(const std::string& name);          // 040 on: cancellation before the deadline
bool closes_idle(const std::string& name);      // 045 on: its own connection loop (--trace: "conn:" lines)
bool drains_first(const std::string& name);     // 050: --drain-delay-ms

// How long a load balancer keeps sending traffic to an instance after its
// SIGTERM (endpoint removal lag): 1 s, scaled. 050's drain delay in tests.
milliseconds lb_lag();

// A stage running against a Redis server, ready to take requests.
struct Running {
  std::unique_ptr<testkit::Process> process;
  int port = 0;
};
// Starts `name` with --port 0 --redis <redis> plus `extra` and waits for its
// ready line. 050 gets --drain-delay-ms lb_lag() unless `extra` sets it.
Running start(const std::string& name, const testkit::RedisServer& redis, std::vector<std::string> extra = {});

// One HTTP exchange as a client saw it.
struct Http {
  int status = 0;          // 0: no response
  std::string error;       // "refused", "reset", "timeout", ... when no response
  std::string connection;  // the Connection header of the response
  std::string body;
  bool ok() const { return status == 200; }
  std::string str() const;  // "200", "503", "refused", ...
};
// GET, and POST with an empty body, on a fresh connection.
Http get(int port, const std::string& path, milliseconds timeout = milliseconds(5000));
Http post(int port, const std::string& path, milliseconds timeout = milliseconds(5000));

// A client that keeps its connection open between requests.
class KeepAlive {
 public:
  explicit KeepAlive(int port, milliseconds timeout = milliseconds(5000));
  ~KeepAlive();
  KeepAlive(const KeepAlive&) = delete;
  KeepAlive& operator=(const KeepAlive&) = delete;
  Http get(const std::string& path);
  Http incr(const std::string& id);  // an /incr with this id
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How a stop went, as every scenario reports it.
struct Stop {
  std::optional<testkit::ExitStatus> status;  // nullopt: still running at the bound (then SIGKILLed)
  long long stop_ms = -1;                     // SIGTERM -> exit
  std::string transcript;                     // command, status, stdout, stderr
  bool exited_ok() const { return status && status->ok(); }
  std::string str() const;  // "exit 0", "killed by SIGTERM", "still running"
};

// A: requests are acknowledged, then SIGTERM while their background writes
// are pending (--work-ms 1000, scaled); a few more requests follow the
// signal. The load checker's report says what was acknowledged and lost.
struct PendingWrites {
  load::Report report;
  Stop stop;
  int acked_before_signal = 0;
};
PendingWrites sigterm_with_pending_writes(const std::string& name);

// B: SIGTERM while a request is inside its handler (--handler-ms 800,
// scaled): does that client get its response?
struct InFlight {
  Http response;
  Stop stop;
};
InFlight sigterm_with_request_in_flight(const std::string& name);

// C: a keep-alive client made a request before SIGTERM. After the signal,
// /readyz is polled on fresh connections until they are refused; once the
// stage says its listener is closed, the idle keep-alive connection is used
// again; then the client closes it.
struct TrafficFirst {
  long long refused_after_ms = -1;    // SIGTERM -> first refused connection (-1: never)
  bool readiness_503 = false;         // /readyz said 503 while requests were still answered
  bool served_while_draining = false; // an /incr sent after SIGTERM was answered 200
  Http keep_alive_after_close;        // the idle keep-alive connection after the listener closed
  Stop stop;
  // Kept answering for the load balancer's lag, saying 503 on /readyz, and
  // closed the idle keep-alive connection.
  bool right() const {
    return refused_after_ms >= lb_lag().count() && readiness_503 && served_while_draining && !keep_alive_after_close.ok();
  }
};
TrafficFirst stop_taking_traffic(const std::string& name);

// D: a handler that never finishes (--handler-ms 60000). SIGTERM, and if the
// stage is still running at the bound, a second SIGTERM. 036 to 050 run with
// --shutdown-timeout-ms 2000 (scaled).
struct Stuck {
  Stop stop;
  long long deadline_ms = 0;           // the configured deadline (040/050)
  bool second_signal_sent = false;
  bool stuck_reported = false;         // stderr names the stuck id, cancelled or abandoned
  bool cancelled_reported = false;     // ... as cancelled: the handler gave up when asked
};
Stuck sigterm_with_stuck_handler(const std::string& name);

// An idle keep-alive connection open at SIGTERM and never closed by the
// client: how long until the stage exits.
struct IdleKeepAlive {
  Stop stop;
  long long idle_ms = -1;  // from the connection's last response to the exit
};
IdleKeepAlive sigterm_with_idle_keep_alive(const std::string& name);

// E: the idle close raced. Per round: a fresh stage (--drain-delay-ms 0 for
// 050), `connections` keep-alive clients that each made a request and went
// idle, SIGTERM, then every client sends one /incr 0-4 ms later, right when
// the stage closes idle connections. Over all rounds, an id persisted in
// Redis whose client got no 200 was executed but not answered.
struct IdleRace {
  int rounds = 0;
  int sent = 0;
  int answered = 0;                          // 200
  std::vector<std::string> unanswered_ran;   // persisted, client saw no 200
  std::vector<std::string> answered_lost;    // 200, not persisted
  std::string last_transcript;
};
IdleRace race_idle_close(const std::string& name, int rounds, int connections);

// F: more keep-alive clients than --threads. `idle` clients made a request
// and stay idle, holding every worker thread; then `queued` clients connect
// and send an /incr each, which waits for a worker. Once the stage has
// accepted all of them (its socket descriptors), SIGTERM.
struct Queued {
  std::vector<Http> responses;  // of the queued requests, in order
  int answered = 0;
  int persisted = 0;
  Stop stop;
};
Queued sigterm_with_queued_connections(const std::string& name, int threads, int idle, int queued);

// One raw HTTP/1.1 exchange on a new connection: writes `request`, reads
// until the server closes the connection. nullopt: still open at the timeout.
std::optional<std::string> exchange_until_close(int port, const std::string& request, milliseconds timeout);

}  // namespace ch02
