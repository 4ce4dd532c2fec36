// scenarios.hpp - the experiments of chapter 04, shared by the tests (which
// assert on the results) and the tour (which prints them), so that both show
// exactly the same thing.
//
// Every scenario runs against a fresh redis-server it is given, pushes jobs
// ("id=<id> steps=<n>") the way a producer would, starts a stage binary,
// delivers a signal at a moment the stage has announced on stdout (never
// after a fixed sleep), and reads the outcome back from Redis by job id.
#pragma once

#include <csignal>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "testkit/process.hpp"
#include "testkit/redis.hpp"

namespace worker_loop {

using testkit::milliseconds;

struct Stage {
  std::string name;  // the binary, e.g. "030-interruptible-wait"
  bool graceful;     // handles SIGTERM at all (020 on)
  bool budget;       // --budget-ms, a second signal forces exit (030 on)
  bool reliable;     // processing list, --block-ms instead of --interval (040 on)
  bool pool;         // --workers, --name (050 on)
  bool lease;        // --lease-ms: a name is a lease, expired ones are reaped (060 on)
  bool cap = false;  // --max-attempts: a job that never finishes is dead-lettered (070 on)
  bool streams = false;  // a stream and a consumer group; --min-idle-ms instead of --lease-ms (110)
  bool expiring = false;  // --retain-ms: every per-job key expires (105)
  bool named = false;     // --name without --workers (043)
};
const std::vector<Stage>& stages();
const Stage& stage(std::string_view name);
std::string binary(const Stage& s);  // full path of the built stage

struct Settings {
  std::string queue = "jobs";
  milliseconds interval{2000};  // pause between jobs (010-030)
  milliseconds block{500};      // longest wait for a job (040-050)
  milliseconds step{100};       // one step of a job
  milliseconds budget{5000};    // stop budget (030-050)
  int workers = 2;              // 050 on
  std::string name;             // --name (050 on); empty: the stage's default
  milliseconds lease{2000};     // --lease-ms (060 on), --min-idle-ms (110)
  int max_attempts = 5;         // --max-attempts (070 on)
};

// How many jobs the stage runs at once.
int workers(const Stage& s, const Settings& cfg);

// Clients of the server blocked in a command (BLMOVE, XREADGROUP): the
// flag "b" of CLIENT LIST.
int blocked_clients(testkit::RedisClient& c);

std::vector<std::string> command_line(const Stage& s, const testkit::RedisServer& redis, const Settings& cfg);
// Starts the stage and waits for its "ready" line.
std::unique_ptr<testkit::Process> start(const Stage& s, const testkit::RedisServer& redis, const Settings& cfg);

// --- the producer's and the checker's view of the queue ---------------------
std::string payload(const std::string& id, int steps);
// Adds one payload as a producer would: RPUSH to the list, or XADD to the
// stream (field "payload") for the stages that read a stream.
void produce(testkit::RedisClient& redis, const std::string& queue, const std::string& payload, bool stream);
// Pushes jobs <prefix>1..<prefix>count, each of `steps` steps; returns ids.
std::vector<std::string> push_jobs(testkit::RedisClient& redis, const std::string& queue, const std::string& prefix,
                                   int count, int steps, bool stream = false);

struct JobState {
  long long steps_written = 0;  // fields of <queue>:steps:<id>
  long long attempts = 0;       // runs started
  bool done = false;            // in <queue>:done
  bool waiting = false;         // still in the queue or a processing list
  bool half_done() const { return steps_written > 0 && !done; }
  std::string str(int steps) const;  // "done", "half done (1/4 steps), gone from the queue", ...
};
JobState job_state(testkit::RedisClient& redis, const std::string& queue, const std::string& id);
// The ids of `ids` that are done, and the runs started per id, read from
// either ledger: the queue's done set and attempts hash (up to 100, 110) or
// one key per job (105).
std::set<std::string> done_ids(testkit::RedisClient& redis, const std::string& queue,
                               const std::vector<std::string>& ids);
std::map<std::string, long long> attempt_counts(testkit::RedisClient& redis, const std::string& queue,
                                                const std::vector<std::string>& ids);
// Every payload in the queue and in every processing list of the queue (for
// a stream: every entry not yet acknowledged, since an ack deletes it).
std::vector<std::string> waiting_payloads(testkit::RedisClient& redis, const std::string& queue);

// --- scenarios ---------------------------------------------------------------
struct Stopped {
  std::optional<testkit::ExitStatus> status;  // nullopt: still running at the bound (then killed)
  long long latency_ms = -1;                  // signal sent -> process gone (when it exited)
  std::string out, err;                       // what it printed
  std::string transcript;                     // for failure messages
  bool exited_ok() const { return status && status->ok(); }
  std::string status_text() const;            // "exit 0", "killed by SIGTERM", "still running"
};

// Jobs of 4 steps queued, two more than the stage has workers; the signal
// arrives once every worker is at step 1 of its first job.
struct MidJob : Stopped {
  int steps = 4;
  std::vector<std::string> running;    // the jobs in progress at the signal
  std::vector<JobState> running_after; // what became of them
  std::vector<std::string> behind;     // the jobs queued behind them
  int behind_started = 0;              // ... of which were started after the signal
  int behind_waiting = 0;              // ... of which are still queued
  // Every running job finished, and nothing behind them was taken.
  bool nothing_lost() const;
  std::string summary() const;  // "j1 done, 2 queued", "j1 half done (1/4 steps), gone from the queue"
};
MidJob stop_mid_job(testkit::RedisServer& redis, const Stage& s, Settings cfg, int sig = SIGTERM);

// The queue is empty and the stage is waiting for the next tick or job.
Stopped stop_while_idle(testkit::RedisServer& redis, const Stage& s, Settings cfg);

// One job of `steps` steps, longer than the budget; SIGTERM at step 1. The
// process is given budget + margin to exit by itself, then killed.
struct Overrun : Stopped {
  std::string job;
  int steps = 0;
  bool reported = false;  // stderr names the job it abandoned
  JobState state;
};
Overrun stop_during_long_job(testkit::RedisServer& redis, const Stage& s, Settings cfg, int steps, milliseconds margin);

// SIGTERM mid-job (long job), then a second SIGTERM once the stage has
// acknowledged the first: latency is measured from the second signal.
Stopped second_signal(testkit::RedisServer& redis, const Stage& s, Settings cfg, milliseconds bound);

// Jobs queued (two more than workers); SIGKILL once every worker is at step 1
// of its first job, then the stage is started again and left to drain the
// queue.
struct KillRestart {
  std::vector<std::string> produced;
  std::vector<std::string> killed;          // the jobs in progress at the kill
  std::vector<std::string> lost;            // produced, never done
  std::vector<std::string> half_done;       // ... of which are half done
  std::map<std::string, long long> reruns;  // id -> runs started, for ids started more than once
  std::string transcript;                   // both runs
};
KillRestart kill_and_restart(testkit::RedisServer& redis, const Stage& s, Settings cfg);

std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

}  // namespace worker_loop

namespace worker_loop {

// The chaos experiment: `jobs` jobs of 2 steps, three worker processes of 2
// workers each (w1, w2, w3) on one queue, and `kills` kill -9s of a random
// live process at random moments. The first process killed never comes
// back; each later one is replaced by a process with a new name (w4, ...).
// Then the survivors are left to drain the queue. Everything random comes
// from `seed`.
struct Chaos {
  unsigned seed = 0;
  int jobs = 0, kills = 0, max_attempts = 0;
  std::vector<std::string> killed;      // names, in order; killed[0] never came back
  std::vector<std::string> lost;        // ids never done
  std::vector<std::string> stranded;    // ... of which sit in a dead worker's processing list
  std::vector<std::string> over_cap;    // ids started more often than --max-attempts
  long long dead_lettered = 0;
  long long duplicates = 0;             // runs beyond the first, summed over all ids
  long long elapsed_ms = 0;
  std::string summary() const;          // one line, for the test log and the tour
};
Chaos chaos(testkit::RedisServer& redis, const Stage& s, unsigned seed, int jobs, int kills = 5);

}  // namespace worker_loop
