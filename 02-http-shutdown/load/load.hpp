// load/load.hpp - the seed 003 experiment made exact: send N /incr requests
// with unique ids at a rate, stop the server at a chosen moment, classify
// every outcome, then compare the acknowledged ids with the ids persisted in
// Redis. Used by the loadcheck program, the tests and the tour, so all three
// measure the same way.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace load {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// What one request got.
enum class Outcome { ok, http_5xx, http_other, refused, reset, timeout, other };
const char* outcome_name(Outcome o);  // "200", "5xx", "refused", "reset", ...

struct Options {
  int requests = 1000;
  double rate = 25;               // requests per second (the seed: 25/s for 40 s)
  int connections = 8;            // concurrent clients
  bool keep_alive = true;         // false: a fresh connection per request
  std::string id_prefix = "r";    // ids are <prefix><index>, zero-padded
  milliseconds timeout{2000};     // per request: connect, read, write
  // The stop: before request #signal_after is sent (once every earlier
  // request has its outcome), or signal_at after the start. At most one.
  int signal_after = -1;
  milliseconds signal_at{-1};
  int signal = 15;                // SIGTERM
  // With a replacement instance: how long traffic still goes to the old
  // instance after its signal (the load balancer's endpoint-removal lag).
  milliseconds lb_lag{0};
  milliseconds exit_timeout{30'000};  // how long the stopped server may take to exit
  milliseconds settle{10'000};        // how long to wait for writes of servers still running
  std::string redis_host = "127.0.0.1";
  int redis_port = 6379;
};

// The server under test and what the run may do to it.
struct Target {
  int port = 0;
  pid_t pid = 0;  // receives the signal (0: no signal is sent)
  // Called at the stop point before the signal, for a rolling update: start
  // a replacement and return its port once it is ready (0: no replacement).
  std::function<int()> start_replacement;
  // Waits for the signalled server to exit: its status ("exit 0", "killed by
  // SIGTERM") or nullopt when it is still running at the timeout.
  std::function<std::optional<std::string>(milliseconds)> wait_exit;
};

struct Report {
  int sent = 0;
  int acknowledged = 0;
  int persisted = 0;          // acknowledged ids found in the Redis set
  int lost = 0;               // acknowledged, not persisted
  long long duplicated = 0;   // writes beyond one per id (counter - set size)
  int persisted_unacked = 0;  // persisted although the client saw an error
  std::map<std::string, int> errors_before;  // outcome -> count, sent before the signal
  std::map<std::string, int> errors_after;   // sent after it
  std::vector<std::string> lost_ids;         // in request order
  std::vector<std::string> acked_ids;
  bool signalled = false;
  int signalled_after = 0;      // requests sent before the signal
  long long shutdown_ms = -1;   // signal -> exit of the signalled server
  std::string exit_status;      // of the signalled server, "" if not signalled
  bool replaced = false;
  std::string redis_error;      // non-empty when Redis could not be read

  int errors() const;  // all errors, before and after the signal
  int errors_before_signal() const;
  // The printed report: one figure per line, stable layout.
  std::string render(const Options& opts) const;
};

Report run(const Target& target, const Options& opts);

}  // namespace load
