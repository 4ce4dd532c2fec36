// scenarios.hpp - the gRPC side of the chapter's checks, shared by the
// client program, the tests and the tour so that all three measure the same
// thing the same way.
//
//   run_stop_scenario(): start a stage against a Redis, open streams, send
//   Work RPCs with ids at a rate, SIGTERM once some are known to be running
//   on the server, then compare what the client was told with what Redis has.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "health.grpc.pb.h"
#include "testkit/process.hpp"
#include "testkit/redis.hpp"
#include "work.grpc.pb.h"

namespace grpcstop {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string code_name(grpc::StatusCode code);

// A stage binary started with --port 0 (or the given port) against a Redis;
// the constructor returns once the stage printed its ready line.
class Server {
 public:
  Server(const std::string& binary, const std::string& redis_address, std::vector<std::string> extra_args = {},
         int port = 0);
  testkit::Process& process() { return *process_; }
  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::unique_ptr<testkit::Process> process_;
  int port_ = 0;
};

// One address: a plain channel. Several: round_robin over all of them with
// health checks and a retry policy for UNAVAILABLE (kRetryServiceConfig).
// Returns once connected (throws testkit::Failure after 10 s, scaled).
extern const char* const kRetryServiceConfig;
// round_robin and health checks, no retries at all (transparent ones included).
extern const char* const kNoRetryServiceConfig;
std::shared_ptr<grpc::Channel> channel_to(const std::vector<std::string>& targets,
                                          const std::string& service_config = kRetryServiceConfig);

struct RpcResult {
  std::string id;
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  int server_pid = 0;
  Clock::time_point sent{}, done{};
  bool ok() const { return code == grpc::StatusCode::OK; }
};

// One blocking Work call.
RpcResult work(grpc::Channel& channel, const std::string& id, long long work_ms,
               milliseconds timeout = milliseconds(10'000));
// One health Check of the whole server (service ""): "SERVING",
// "NOT_SERVING", or the status code of the failed call ("UNAVAILABLE").
std::string health(grpc::Channel& channel, milliseconds timeout = milliseconds(1000));

// A Ticks stream read on a thread of its own until it ends or is cancelled.
class TickStream {
 public:
  TickStream(std::shared_ptr<grpc::Channel> channel, std::string id, long long interval_ms = 20);
  ~TickStream();  // cancels and joins
  void cancel();
  bool wait_ticks(long long n, milliseconds timeout);  // true once n ticks arrived
  bool wait_finished(milliseconds timeout);           // true once the stream ended
  long long ticks() const;
  grpc::Status status() const;  // valid once finished

 private:
  std::shared_ptr<grpc::Channel> channel_;
  grpc::ClientContext context_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  long long ticks_ = 0;
  bool finished_ = false;
  grpc::Status status_;
  std::thread reader_;
};

// N Work RPCs with ids PREFIX-1..PREFIX-N, `rate` per second (0: as fast as
// `concurrency` allows), each doing work_ms of work.
struct LoadOptions {
  int rpcs = 20;
  int rate = 50;
  int concurrency = 64;
  long long work_ms = 300;
  std::string id_prefix = "rpc";
  milliseconds rpc_timeout = milliseconds(10'000);
  // Each call waits for a connection that is READY instead of failing at
  // once while the channel has none (gRPC's wait-for-ready call option).
  bool wait_for_ready = false;
};
struct LoadResult {
  std::vector<RpcResult> rpcs;  // in id order; only the ones sent
  int not_sent = 0;             // held back because the server announced NOT_SERVING
  milliseconds elapsed{0};
};

class Load {
 public:
  // Starts sending at once on a thread of its own.
  Load(std::shared_ptr<grpc::Channel> channel, LoadOptions options);
  ~Load();
  // A health-aware client stops sending to a server that says NOT_SERVING.
  void hold_back();
  LoadResult wait();  // every RPC sent and answered (each is bounded by rpc_timeout)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The stop scenario.
struct StopOptions {
  LoadOptions load;
  int streams = 0;          // Ticks streams held open across the stop
  int sigterm_after = 0;    // SIGTERM once this many Work RPCs started on the server
                            // (and every stream is open); -1: after the load
  milliseconds exit_timeout = milliseconds(10'000);  // bounded wait for the exit
  // Long-lived callers in processes of their own (hold-client): connected,
  // channel kept open and idle, no call, until the server has exited.
  int idle_clients = 0;
  std::string hold_client_binary;
};

struct StopReport {
  std::string stage;
  LoadResult load;
  std::vector<std::string> in_flight;  // ids the server had started when SIGTERM was sent
  std::set<std::string> started;    // ids the server said it started
  std::set<std::string> persisted;  // ids in Redis afterwards
  std::optional<testkit::ExitStatus> exit;     // nullopt: did not exit in time (killed)
  std::optional<milliseconds> shutdown_time;   // SIGTERM -> exit
  std::optional<milliseconds> not_serving_after;  // SIGTERM -> first NOT_SERVING seen
  std::optional<milliseconds> last_reply_to_exit;  // last answered RPC -> exit
  std::vector<long long> stream_ticks;
  std::vector<grpc::Status> stream_status;
  std::string server_out, server_err;

  int ok() const;
  int failed() const;
  std::map<std::string, std::pair<int, std::string>> failed_by_code() const;  // code -> (count, a message)
  std::vector<std::string> lost() const;       // answered OK, not in Redis
  std::vector<std::string> abandoned() const;  // started on the server, never persisted
  bool hung() const { return !exit.has_value(); }
};

StopReport run_stop_scenario(const std::string& binary, testkit::RedisServer& redis,
                             const std::vector<std::string>& server_args, const StopOptions& options);

// Two servers of one stage behind one round-robin channel with retries, under
// a steady load; each server in turn is stopped with SIGTERM and restarted on
// the same port, as a rolling update does. The load ends when the second
// restarted server has taken traffic (load.rpcs is only an upper bound).
struct RollingReport {
  LoadResult load;  // load.not_sent: the RPCs left when the rolling restart was over
  std::set<std::string> persisted;
  std::set<int> server_pids;  // processes that answered
  std::vector<testkit::ExitStatus> exits;
  int ok() const;
  std::map<std::string, std::pair<int, std::string>> failed_by_code() const;
  std::vector<std::string> lost() const;  // answered OK, not in Redis
};
RollingReport run_rolling_restart(const std::string& binary, testkit::RedisServer& redis,
                                  const std::vector<std::string>& server_args, const LoadOptions& load,
                                  const std::string& service_config = kRetryServiceConfig);

// The stages and the flags every check runs them with.
struct Stage {
  std::string name;               // "030-shutdown-deadline"
  std::vector<std::string> args;  // extra server flags
  std::optional<milliseconds> budget;  // configured shutdown budget, if the stage has one
};
const std::vector<Stage>& stages();
const Stage& stage(const std::string& prefix);  // "030" -> the 030 stage

// Scenario "SIGTERM under load": 40 Work RPCs of 400 ms at 50/s, SIGTERM once
// 10 of them run on the server; the client keeps sending unless it reads
// NOT_SERVING. Measures: exit and its time, ids lost, errors, health.
StopOptions under_load_options();
// Scenario "SIGTERM with an open stream": one Ticks stream, no RPCs, SIGTERM,
// then a bounded wait of budget + 1 s (3 s without a budget).
StopOptions open_stream_options(const Stage& stage);
// Slack allowed past a budget: gRPC's own teardown after the deadline.
inline milliseconds teardown_slack() { return milliseconds(500); }

// What the client prints: sent / OK / failed by code / lost / shutdown time.
std::string render(const StopReport& report);

}  // namespace grpcstop
