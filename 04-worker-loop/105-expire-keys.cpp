// 105-expire-keys: the ledger forgets, on purpose and late enough.
//
// Demonstrates: 100, with every per-job key given an expiry (--retain-ms,
// 24 h by default). The done set and the attempts hash become one key per
// job (<queue>:done:<id>, <queue>:attempts:<id>), because Redis 7.0 expires
// whole keys, not members of a set or fields of a hash; <queue>:steps:<id>
// gets the same expiry with every step written.
//
// Why that is safe: see "retain" below. The done marker is what turns a
// second delivery into a duplicate ack, so it must outlive every delivery
// the queue itself can still make; the attempt counter must outlive the
// gap between two runs of one job. Both are bounded by the lease, the
// reaper's period and the budget, which --retain-ms must exceed (checked).
// A copy a producer pushes again after --retain-ms runs again: the window
// is a de-duplication window, and the handler stays idempotent.
//
// Still wrong, or left out: the dead-letter list is kept for an operator
// and never expires; see 110 for Redis Streams, which keeps 100's ledger.
//
// Reproduces: 100's done set, attempts hash and steps hashes, which grow by
// one entry per job for ever.
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <unistd.h>

#include <random>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/flags.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct ReplyFree {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyFree>;

// The connection broke (I/O error, timeout, server gone): reconnect and go on.
// An error *reply* is a bug in this program and stays fatal.
struct ConnectionLost : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// docs:begin redis
// One connection to Redis, used by one thread only: a hiredis context is not
// thread-safe. connect() makes a fresh context rather than calling
// redisReconnect(), which forgets the read timeout; without it a read from a
// half-dead server can block for ever, past any stop budget.
class Redis {
 public:
  Redis(std::string host, int port, milliseconds read_timeout)
      : host_(std::move(host)), port_(port), read_timeout_(read_timeout) {}
  ~Redis() { close(); }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  bool connect(std::string& why) {
    close();
    timeval connect_timeout{1, 0};
    c_ = redisConnectWithTimeout(host_.c_str(), port_, connect_timeout);
    if (!c_ || c_->err) {
      why = c_ ? c_->errstr : "out of memory";
      close();
      return false;
    }
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(read_timeout_).count();
    redisSetTimeout(c_, timeval{us / 1'000'000, us % 1'000'000});
    try {
      id_ = command({"CLIENT", "ID"})->integer;  // what CLIENT UNBLOCK names
    } catch (const std::exception& e) {
      why = e.what();
      close();
      return false;
    }
    return true;
  }
  long long id() const { return id_; }

  Reply command(std::initializer_list<std::string> args) {
    if (!c_) throw ConnectionLost("not connected");
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(redisCommandArgv(c_, static_cast<int>(argv.size()), argv.data(), lens.data()));
    if (!r) throw ConnectionLost(std::string(argv[0]) + ": " + c_->errstr);
    Reply reply(r);
    if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("redis: ") + argv[0] + ": " + r->str);
    return reply;
  }

 private:
  void close() {
    if (c_) redisFree(c_);
    c_ = nullptr;
  }
  std::string host_;
  int port_;
  milliseconds read_timeout_;
  redisContext* c_ = nullptr;
  long long id_ = -1;
};
// docs:end redis

// Payloads are "id=<id> steps=<n>"; id is 1..64 of [A-Za-z0-9_-], n 1..1000.
struct Job {
  std::string id;
  int steps = 0;
};

bool parse_job(std::string_view p, Job& job, std::string& why) {
  auto malformed = [&why](const char* reason) {
    why = reason;
    return false;
  };
  if (p.substr(0, 3) != "id=") return malformed("does not start with 'id='");
  auto space = p.find(' ');
  std::string_view id = p.substr(3, space == std::string_view::npos ? std::string_view::npos : space - 3);
  auto id_char = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-'; };
  if (id.empty() || id.size() > 64 || !std::all_of(id.begin(), id.end(), id_char))
    return malformed("id is not 1..64 characters of [A-Za-z0-9_-]");
  if (space == std::string_view::npos || p.substr(space, 7) != " steps=") return malformed("missing ' steps='");
  std::string_view n = p.substr(space + 7);
  auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), job.steps);
  if (n.empty() || ec != std::errc() || end != n.data() + n.size() || job.steps < 1 || job.steps > 1000)
    return malformed("steps is not a number in 1..1000");
  job.id = id;
  return true;
}

// Payloads come from outside: never print them raw.
std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char ch : s.substr(0, 80)) {
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
      out += static_cast<char>(ch);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    }
  }
  return s.size() > 80 ? out + "..." : out;
}

std::string queue_flag(support::Flags& flags) {
  std::string q = flags.text("--queue", "jobs", 100);
  for (char ch : q)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-' && ch != ':' && ch != '.')
      support::Flags::fail("--queue", "only [A-Za-z0-9_.:-] allowed, got '" + q + "'");
  return q;
}

void wait_interval(std::stop_token token, milliseconds pause);

// The lists and keys of one queue, as one worker of the pool sees them.
std::string processing_prefix(const std::string& q, const std::string& name) { return q + ":processing:" + name + ":"; }
std::string lease_key(const std::string& q, const std::string& name) { return q + ":lease:" + name; }

// docs:begin retain
// Every key that records one job expires --retain-ms after its last write.
// How long is long enough:
// - done:<id> turns a later copy of the job into a duplicate ack. The ack
//   removes the job from processing in the same transaction, so the reaper
//   and recovery never requeue a done job; the one copy the queue itself
//   makes of a job that may finish is the hand-back at the budget, put at
//   the head of the queue, taken by the next free worker. A marker that
//   outlives the budget, a lease and a reaper period covers it whenever
//   any worker is running; past that it is a de-duplication window for
//   producers' duplicates, which then run again, harmlessly (idempotent).
// - attempts:<id> is refreshed at every start, so it must outlive the gap
//   between two starts of one job: its worker's lease expiring, one reaper
//   period (lease / 3) and the hand-back (budget). If it expired sooner, a
//   poison job would get --max-attempts runs more, again and again.
// - steps:<id> is the job's output here; a real job writes elsewhere.
struct Keys {
  Keys(const std::string& q, const std::string& name, int worker, milliseconds retain)
      : queue(q), processing(processing_prefix(q, name) + std::to_string(worker)), dead(q + ":dead"),
        retain_ms(std::to_string(retain.count())) {}
  std::string steps(const std::string& id) const { return queue + ":steps:" + id; }
  std::string claim(const std::string& id) const { return queue + ":claim:" + id; }
  std::string done(const std::string& id) const { return queue + ":done:" + id; }
  std::string attempts(const std::string& id) const { return queue + ":attempts:" + id; }
  std::string queue, processing, dead, retain_ms;
};
// docs:end retain

// What the workers are doing, shared between the workers, the signal
// thread and main (which reports it if the budget runs out).
struct Status {
  struct Progress {
    std::string job;  // the job in progress, empty between jobs
    int step = 0, steps = 0;
  };
  std::mutex mu;
  std::condition_variable_any cv;   // notified when a worker leaves its loop
  std::vector<Progress> workers;
  std::vector<long long> client_ids;  // each worker's connection, for CLIENT UNBLOCK
  int running = 0;                  // workers still in their loop
  bool failed = false;              // one of them hit an error
  Clock::time_point stop_at{};      // when the stop was requested
  bool forced = false;             // a second signal came: exit now
};

void set_progress(Status& status, int worker, const std::string& job, int step, int steps) {
  std::lock_guard lock(status.mu);
  status.workers[static_cast<std::size_t>(worker)] = {job, step, steps};
}

// docs:begin recover
// Whatever the processing list holds was taken by a run of this worker that
// never acknowledged it: killed, or cut off from Redis mid-job. Move it back
// to the head of the queue, oldest first, so it runs next.
void recover(Redis& redis, const Keys& k) {
  while (true) {
    Reply moved = redis.command({"LMOVE", k.processing, k.queue, "RIGHT", "LEFT"});
    if (moved->type == REDIS_REPLY_NIL) return;
    std::printf("recovered: '%s' was left in %s, requeued\n",
                printable({moved->str, moved->len}).c_str(), k.processing.c_str());
  }
}
// docs:end recover

// docs:begin recover-all
// On start: the lists of every worker this instance ever ran, not only
// 0..workers-1, so that restarting with a smaller pool loses nothing.
void recover_instance(Redis& redis, const std::string& queue, const std::string& name) {
  std::string cursor = "0";
  std::vector<std::string> lists;
  do {
    Reply page = redis.command({"SCAN", cursor, "MATCH", processing_prefix(queue, name) + "*", "COUNT", "100"});
    cursor.assign(page->element[0]->str, page->element[0]->len);
    for (std::size_t i = 0; i < page->element[1]->elements; ++i)
      lists.emplace_back(page->element[1]->element[i]->str, page->element[1]->element[i]->len);
  } while (cursor != "0");
  std::sort(lists.begin(), lists.end());
  for (auto& list : lists) {
    while (true) {
      Reply moved = redis.command({"LMOVE", list, queue, "RIGHT", "LEFT"});
      if (moved->type == REDIS_REPLY_NIL) break;
      std::printf("recovered: '%s' was left in %s, requeued\n", printable({moved->str, moved->len}).c_str(),
                  list.c_str());
    }
  }
}
// docs:end recover-all

// docs:begin lease
// The lease: <queue>:lease:<name> holds a random token for --lease-ms. SET NX
// makes taking it atomic, so of two processes started with one name exactly
// one gets it. Renewal and release compare the token first (in Lua, so the
// check and the write are one step): a process never extends or deletes a
// lease that expired and was taken by someone else.
const char* const kRenew =
    "local v = redis.call('GET', KEYS[1]) "
    "if v == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end "
    "if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end "
    "return 0";
const char* const kRelease =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

std::string random_token() {
  std::random_device rd;
  char buf[33];
  std::snprintf(buf, sizeof buf, "%08x%08x%08x%08x", rd(), rd(), rd(), rd());
  return buf;
}

bool take_lease(Redis& redis, const std::string& key, const std::string& token, milliseconds ttl) {
  return redis.command({"SET", key, token, "NX", "PX", std::to_string(ttl.count())})->type != REDIS_REPLY_NIL;
}

// Keeps the lease for as long as this process lives; false if another
// process holds it now (this one was presumed dead and its jobs reaped).
bool renew_lease(Redis& redis, const std::string& key, const std::string& token, milliseconds ttl) {
  return redis.command({"EVAL", kRenew, "1", key, token, std::to_string(ttl.count())})->integer == 1;
}
// docs:end lease

// docs:begin reaper
// The visibility timeout. A processing list belongs to the name between
// "processing:" and the last ':'. If that name's lease is gone, its owner
// was killed and nobody took the name again: its jobs go back to the head
// of the queue. Checking the lease and moving the jobs is one script, so a
// process that takes the name in between cannot have a job stolen from it.
const char* const kReap =
    "if redis.call('EXISTS', KEYS[2]) == 1 then return {} end "
    "local moved = {} "
    "while true do "
    "  local p = redis.call('LMOVE', KEYS[1], KEYS[3], 'RIGHT', 'LEFT') "
    "  if not p then return moved end "
    "  table.insert(moved, p) "
    "end";

void reap(Redis& redis, const std::string& queue, const std::string& own_name) {
  std::string prefix = queue + ":processing:", cursor = "0";
  std::vector<std::string> lists;
  do {
    Reply page = redis.command({"SCAN", cursor, "MATCH", prefix + "*", "COUNT", "100"});
    cursor.assign(page->element[0]->str, page->element[0]->len);
    for (std::size_t i = 0; i < page->element[1]->elements; ++i)
      lists.emplace_back(page->element[1]->element[i]->str, page->element[1]->element[i]->len);
  } while (cursor != "0");
  for (auto& list : lists) {
    auto colon = list.rfind(':');
    if (colon <= prefix.size()) continue;
    std::string name = list.substr(prefix.size(), colon - prefix.size());
    if (name == own_name) continue;
    Reply moved = redis.command({"EVAL", kReap, "3", list, lease_key(queue, name), queue});
    for (std::size_t i = 0; i < moved->elements; ++i)
      std::printf("reaped: '%s' was left in %s by expired lease %s, requeued\n",
                  printable({moved->element[i]->str, moved->element[i]->len}).c_str(), list.c_str(),
                  name.c_str());
  }
}
// docs:end reaper

// docs:begin renew-claims
// The claims of the jobs this process is running live as long as its lease.
const char* const kRenewClaim =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0";

void renew_claims(Redis& redis, const std::string& queue, const std::string& lease_token, milliseconds ttl,
                  Status& status) {
  std::vector<std::string> jobs;
  {
    std::lock_guard lock(status.mu);
    for (auto& w : status.workers)
      if (!w.job.empty()) jobs.push_back(w.job);
  }
  for (auto& id : jobs)
    redis.command({"EVAL", kRenewClaim, "1", queue + ":claim:" + id, lease_token, std::to_string(ttl.count())});
}
// docs:end renew-claims

// docs:begin heartbeat
// Renews the lease three times per period and reaps expired ones. It runs
// until the process ends, through the stop too: the jobs being finished are
// still this process's. If the lease was lost (a pause longer than the
// lease, and another process took the name), the jobs have been requeued
// and may be running elsewhere: exit at once rather than ack them as ours.
void heartbeat(std::stop_token token, std::string host, int port, std::string queue, std::string name,
               std::string key, std::string lease_token, milliseconds ttl, Status& status) {
  Redis redis(host, port, ttl);
  bool connected = false;
  while (!token.stop_requested()) {
    try {
      std::string why;
      if (!connected) connected = redis.connect(why);
      if (connected) {
        if (!renew_lease(redis, key, lease_token, ttl)) {
          std::fprintf(stderr, "error: lease %s was taken by another process; exiting\n", key.c_str());
          std::fflush(stdout);
          _exit(1);
        }
        renew_claims(redis, queue, lease_token, ttl, status);
        reap(redis, queue, name);
      }
    } catch (const ConnectionLost&) {
      connected = false;  // retried on the next beat; the lease outlives a short outage
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: heartbeat: %s\n", e.what());
    }
    wait_interval(token, ttl / 3);
  }
}
// docs:end heartbeat

// docs:begin dead-letter
// A payload that cannot be parsed will never succeed; requeueing it would
// retry it for ever (a poison message). Park it with the reason in the
// dead-letter list, atomically with removing it from processing, and go on.
void dead_letter(Redis& redis, const Keys& k, const std::string& payload, const std::string& why) {
  redis.command({"MULTI"});
  redis.command({"RPUSH", k.dead, "reason=" + why + " payload=" + payload});
  redis.command({"LREM", k.processing, "1", payload});
  redis.command({"EXEC"});
  std::fprintf(stderr, "job dead-lettered: '%s': %s\n", printable(payload).c_str(), why.c_str());
}
// docs:end dead-letter

std::string seconds(milliseconds ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", static_cast<double>(ms.count()) / 1000.0);
  return buf;
}

// Takes one job, waiting at most `block` for it, and runs it to the end: a
// stop request does not interrupt a job. Returns false if none came.
bool do_job(std::stop_token token, Redis& redis, const Keys& k, milliseconds block, milliseconds step,
            int max_attempts, const std::string& owner, milliseconds lease, Status& status, int worker,
            bool& idle) {
  // docs:begin take
  // From here until the ack the job is in exactly one list, processing, so no
  // crash can lose it. The wait is bounded by `block`, below the stop budget.
  Reply taken = redis.command({"BLMOVE", k.queue, k.processing, "LEFT", "RIGHT", seconds(block)});
  // docs:end take
  if (taken->type == REDIS_REPLY_NIL) {
    if (!idle) std::printf("idle: queue empty\n");
    idle = true;
    return false;
  }
  idle = false;
  std::string payload(taken->str, taken->len);
  if (token.stop_requested()) {  // it came in while we waited, after the stop: not ours to start
    redis.command({"LMOVE", k.processing, k.queue, "RIGHT", "LEFT"});
    std::printf("shutdown: '%s' handed back to the queue untouched\n", printable(payload).c_str());
    return true;
  }
  Job job;
  std::string why;
  if (!parse_job(payload, job, why)) {
    dead_letter(redis, k, payload, why);
    return true;
  }
  // docs:begin claim
  // Exclusive: of all the workers holding a copy of this id, one gets the
  // claim. The others put their copy back at the tail and look again later.
  if (redis.command({"SET", k.claim(job.id), owner, "NX", "PX", std::to_string(lease.count())})->type ==
      REDIS_REPLY_NIL) {
    redis.command({"LMOVE", k.processing, k.queue, "RIGHT", "RIGHT"});
    std::printf("job %s: claimed by another worker, requeued\n", job.id.c_str());
    wait_interval(token, block);  // not a busy loop when it is the only job left
    return true;
  }
  // Under the claim, "already done?" and the run that follows are one step
  // as far as every other worker is concerned.
  if (redis.command({"EXISTS", k.done(job.id)})->integer == 1) {  // delivered twice by a producer
    redis.command({"MULTI"});
    redis.command({"LREM", k.processing, "1", payload});
    redis.command({"DEL", k.claim(job.id)});
    redis.command({"EXEC"});
    std::printf("job %s: already done, duplicate acknowledged\n", job.id.c_str());
    return true;
  }
  // docs:end claim
  // docs:begin cap
  // Every earlier run was interrupted: killed, crashed, cut off. After
  // --max-attempts of them the job is not run again but parked, with why.
  Reply started = redis.command({"GET", k.attempts(job.id)});
  long long runs = started->type == REDIS_REPLY_NIL ? 0 : std::stoll(std::string(started->str, started->len));
  if (runs >= max_attempts) {
    dead_letter(redis, k, payload,
                "attempts: started " + std::to_string(runs) + " times, never finished (--max-attempts " +
                    std::to_string(max_attempts) + ")");
    redis.command({"DEL", k.claim(job.id)});
    return true;
  }
  redis.command({"MULTI"});  // counted and given its expiry together
  redis.command({"INCR", k.attempts(job.id)});
  redis.command({"PEXPIRE", k.attempts(job.id), k.retain_ms});
  long long attempt = redis.command({"EXEC"})->element[0]->integer;
  // docs:end cap
  set_progress(status, worker, job.id, 0, job.steps);
  if (attempt == 1)
    std::printf("job %s: start (%d steps) on worker %d\n", job.id.c_str(), job.steps, worker);
  else
    std::printf("job %s: start (%d steps) on worker %d, attempt %lld: an earlier run did not finish\n",
                job.id.c_str(), job.steps, worker, attempt);
  for (int s = 1; s <= job.steps; ++s) {
    std::this_thread::sleep_for(step);  // the work itself
    // Idempotent: a re-run writes the same field with the same value.
    redis.command({"MULTI"});
    redis.command({"HSET", k.steps(job.id), "step" + std::to_string(s), "done"});
    redis.command({"PEXPIRE", k.steps(job.id), k.retain_ms});
    redis.command({"EXEC"});
    set_progress(status, worker, job.id, s, job.steps);
    std::printf("job %s: step %d/%d\n", job.id.c_str(), s, job.steps);
  }
  // docs:begin ack
  // Done and acknowledged together, or neither: a kill between the two
  // cannot leave a finished job in processing (it would run again).
  redis.command({"MULTI"});
  redis.command({"SET", k.done(job.id), "1", "PX", k.retain_ms});
  redis.command({"LREM", k.processing, "1", payload});
  redis.command({"DEL", k.claim(job.id)});
  redis.command({"EXEC"});
  // docs:end ack
  set_progress(status, worker, "", 0, 0);
  std::printf("job %s: done\n", job.id.c_str());
  return true;
}

// Sleeps for `pause` unless a stop is requested first (see 030).
void wait_interval(std::stop_token token, milliseconds pause) {
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait_for(lock, token, pause, [] { return false; });
}

// docs:begin reconnect
// Retries with a growing pause until Redis answers or a stop is requested.
// The job this worker was running, if the server still has it, is in the
// processing list: recover() requeues it and it runs again.
void reconnect(std::stop_token token, Redis& redis, const Keys& k) {
  milliseconds pause{50};
  while (!token.stop_requested()) {
    std::string why;
    if (redis.connect(why)) {
      try {
        std::printf("redis: reconnected\n");
        recover(redis, k);
        return;
      } catch (const ConnectionLost&) {
        // lost again at once: keep trying
      }
    }
    wait_interval(token, pause);
    pause = std::min(pause * 2, milliseconds(1000));
  }
}
// docs:end reconnect

// One worker of the pool: its own connection (a hiredis context is not
// thread-safe), its own processing list, the pool's shared stop token.
void work(std::stop_token token, std::string host, int port, Keys k, milliseconds block, milliseconds step,
          int max_attempts, std::string owner, milliseconds lease, Status& status, int worker) {
  Redis redis(host, port, block + milliseconds(2000));
  bool idle = false;
  try {
    std::string why;
    if (!redis.connect(why)) {
      std::printf("redis: cannot connect (%s), retrying\n", why.c_str());
      reconnect(token, redis, k);
    }
    // docs:begin loop
    while (!token.stop_requested()) {
      {
        std::lock_guard lock(status.mu);  // a new connection after a reconnect has a new id
        status.client_ids[static_cast<std::size_t>(worker)] = redis.id();
      }
      try {
        // waits at most `block` for a job
        do_job(token, redis, k, block, step, max_attempts, owner, lease, status, worker, idle);
      } catch (const ConnectionLost& e) {
        set_progress(status, worker, "", 0, 0);  // the job, if any, is safe in this worker's processing list
        std::printf("redis: connection lost (%s), reconnecting\n", e.what());
        reconnect(token, redis, k);
      }
    }
    // docs:end loop
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: worker %d: %s\n", worker, e.what());
    std::lock_guard lock(status.mu);
    status.failed = true;
  }
  {
    std::lock_guard lock(status.mu);
    --status.running;
  }
  status.cv.notify_all();
}

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

const char* signal_name(int sig) { return sig == SIGINT ? "SIGINT" : "SIGTERM"; }

// docs:begin unblock
// Runs in the thread that calls request_stop(), the signal thread: a worker
// blocked in BLMOVE gets a nil reply now instead of at --block-ms.
void unblock_workers(const std::string& host, int port, Status& status) {
  std::vector<long long> ids;
  {
    std::lock_guard lock(status.mu);
    ids = status.client_ids;
  }
  Redis redis(host, port, milliseconds(1000));
  std::string why;
  if (!redis.connect(why)) return;  // then each worker wakes at --block-ms, as before
  // A worker that checked its token just before the stop may send its
  // blocking command just after this one: so unblock again, every 2 ms, for
  // up to 50 ms, or until every worker has left its loop.
  try {
    for (int round = 0; round < 25; ++round) {
      for (long long id : ids)
        if (id >= 0) redis.command({"CLIENT", "UNBLOCK", std::to_string(id)});
      std::unique_lock lock(status.mu);
      if (status.cv.wait_for(lock, milliseconds(2), [&] { return status.running == 0; })) return;
    }
  } catch (const std::exception&) {
  }
}
// docs:end unblock

// docs:begin hand-back
// At the budget: each abandoned job goes back to the head of the queue and
// its claim is released, in one transaction per job, so any worker can take
// it at once. The worker thread may still ack it before the process exits;
// then the copy in the queue is acknowledged later as a duplicate.
std::string hand_back(const std::string& host, int port, const std::string& queue, const std::string& name,
                      const std::vector<Status::Progress>& workers, const std::string& lease_token) {
  Redis redis(host, port, milliseconds(1000));
  std::string why;
  if (!redis.connect(why)) return "not handed back (" + why + "): they run again when lease " +
                                  lease_key(queue, name) + " expires";
  try {
    for (std::size_t i = 0; i < workers.size(); ++i) {
      if (workers[i].job.empty()) continue;
      redis.command({"MULTI"});
      redis.command({"LMOVE", processing_prefix(queue, name) + std::to_string(i), queue, "RIGHT", "LEFT"});
      redis.command({"DEL", queue + ":claim:" + workers[i].job});
      redis.command({"EXEC"});
    }
    redis.command({"EVAL", kRelease, "1", lease_key(queue, name), lease_token});
  } catch (const std::exception& e) {
    return std::string("not handed back (") + e.what() + "): they run again when lease " +
           lease_key(queue, name) + " expires";
  }
  return "handed back to the queue";
}
// docs:end hand-back

// docs:begin signals
// The first SIGTERM/SIGINT becomes a stop request, the second an immediate
// exit (carried out by main). sigwait returns in ordinary thread context, so
// unlike a handler this code may lock, allocate and print.
void signal_thread(std::stop_source stop, Status& status) {
  sigset_t set = stop_signals();
  int sig = 0;
  sigwait(&set, &sig);
  {
    std::lock_guard lock(status.mu);
    status.stop_at = Clock::now();
  }
  std::printf("shutdown: %s received, stopping the worker\n", signal_name(sig));
  stop.request_stop();
  sigwait(&set, &sig);
  std::fprintf(stderr, "shutdown: second %s, forcing exit\n", signal_name(sig));
  {
    std::lock_guard lock(status.mu);
    status.forced = true;  // main exits: it is the one thread that knows every other
  }
  status.cv.notify_all();
}
// docs:end signals

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
}

std::string name_flag(support::Flags& flags) {
  std::string name = flags.text("--name", "worker", 64);
  for (char ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-' && ch != '.')
      support::Flags::fail("--name", "only [A-Za-z0-9_.-] allowed, got '" + name + "'");
  return name;
}

// See "retain": the done marker and the attempt counter must outlive a lease,
// one reaper period and a hand-back at the budget.
void check_retain(milliseconds retain, milliseconds lease, milliseconds budget) {
  milliseconds floor = lease + lease / 3 + budget;
  if (retain <= floor)
    support::Flags::fail("--retain-ms", "must be longer than --lease-ms + --lease-ms/3 + --budget-ms (" +
                                            std::to_string(floor.count()) +
                                            " ms): a job could run again after its done marker expired");
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 105-expire-keys [--redis HOST:PORT] [--queue NAME] [--workers N] [--name NAME] "
                       "[--lease-ms MS] [--max-attempts N] [--retain-ms MS] [--block-ms MS] [--step-ms MS] "
                       "[--budget-ms MS]");
  auto [host, port] = flags.host_port("--redis", "127.0.0.1:6379");
  std::string queue = queue_flag(flags);
  int workers = static_cast<int>(flags.integer("--workers", 4, 1, 64));
  std::string name = name_flag(flags);
  milliseconds block = flags.millis("--block-ms", 500, 1, 60'000);
  milliseconds step = flags.millis("--step-ms", 100, 0, 60'000);
  milliseconds budget = flags.millis("--budget-ms", 5000, 1, 600'000);
  milliseconds lease = flags.millis("--lease-ms", 10'000, 30, 600'000);
  int max_attempts = static_cast<int>(flags.integer("--max-attempts", 5, 1, 1000));
  milliseconds retain = flags.millis("--retain-ms", 86'400'000, 1, 2'592'000'000);
  flags.done();
  if (block >= budget)
    support::Flags::fail("--block-ms", "must be shorter than --budget-ms (" + std::to_string(budget.count()) +
                                           " ms): a blocked wait for a job would outlast the stop budget");
  check_retain(retain, lease, budget);
  std::signal(SIGPIPE, SIG_IGN);  // a closed Redis socket must be an error, not death

  const std::string lease_token = random_token();
  {
    Redis redis(host, port, block + milliseconds(2000));
    std::string why;
    if (!redis.connect(why)) {
      std::fprintf(stderr, "error: cannot connect to Redis at %s:%d: %s\n", host.c_str(), port, why.c_str());
      return 1;
    }
    try {
      // docs:begin take-lease
      // A killed run of this name leaves its lease behind for up to one
      // period; a live process renews it for ever. So wait out one period
      // (and a half, for a late renewal), then refuse.
      auto give_up = Clock::now() + lease + lease / 2;
      bool said = false;
      while (!take_lease(redis, lease_key(queue, name), lease_token, lease)) {
        if (Clock::now() >= give_up) {
          std::fprintf(stderr, "error: --name %s is in use: lease %s is held by a live process\n", name.c_str(),
                       lease_key(queue, name).c_str());
          return 1;
        }
        if (!said) std::printf("lease %s is held: waiting for it to expire\n", lease_key(queue, name).c_str());
        said = true;
        std::this_thread::sleep_for(std::min(lease / 10, milliseconds(100)));
      }
      recover_instance(redis, queue, name);  // ours now: what a killed run under this name left behind
      reap(redis, queue, name);              // and what workers that never came back left behind
      // docs:end take-lease
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      return 1;
    }
  }

  // Block the stop signals before any thread exists: new threads inherit the
  // mask, so only the signal thread's sigwait ever sees them.
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::printf("ready pid=%d redis=%s:%d queue=%s workers=%d\n", static_cast<int>(getpid()), host.c_str(), port,
              queue.c_str(), workers);
  Status status;
  status.workers.resize(static_cast<std::size_t>(workers));
  status.client_ids.assign(static_cast<std::size_t>(workers), -1);
  status.running = workers;
  // docs:begin pool
  // One stop source for the whole pool: the signal thread's request_stop()
  // reaches every worker's waits at once. (static: it avoids a GCC 12
  // -Wmaybe-uninitialized false positive inside std::stop_source.)
  static std::stop_source stop;
  std::stop_callback unblock(stop.get_token(), [&] { unblock_workers(host, port, status); });
  std::vector<std::jthread> pool;
  for (int i = 0; i < workers; ++i)
    pool.emplace_back(work, stop.get_token(), host, port, Keys(queue, name, i, retain), block, step, max_attempts,
                      lease_token, lease, std::ref(status), i);
  // docs:end pool
  // Detached: it blocks in sigwait for the life of the process.
  std::thread(signal_thread, stop, std::ref(status)).detach();
  // Its own stop source: it must outlive the workers' stop.
  std::jthread beat(heartbeat, host, port, queue, name, lease_key(queue, name), lease_token, lease,
                    std::ref(status));

  std::unique_lock lock(status.mu);
  // Until a stop is requested, or every worker ended by itself (errors).
  status.cv.wait(lock, stop.get_token(), [&] { return status.running == 0; });
  // docs:begin stop
  // Seed 002's Stop() for the pool: one budget for all workers together,
  // and no wait at all after a second signal.
  status.cv.wait_until(lock, status.stop_at + budget, [&] { return status.running == 0 || status.forced; });
  if (status.running > 0 || status.forced) {
    if (!status.forced) {
      std::string abandoned;
      for (std::size_t i = 0; i < status.workers.size(); ++i) {
        auto& w = status.workers[i];
        if (w.job.empty()) continue;
        abandoned += (abandoned.empty() ? "" : ", ") + std::string("job ") + w.job + " at step " +
                     std::to_string(w.step) + "/" + std::to_string(w.steps) + " (" +
                     processing_prefix(queue, name) + std::to_string(i) + ")";
      }
      std::string outcome = hand_back(host, port, queue, name, status.workers, lease_token);
      std::fprintf(stderr, "shutdown: gave up after %lld ms (budget %lld ms): abandoned %s; %s\n",
                   ms_since(status.stop_at), static_cast<long long>(budget.count()),
                   abandoned.empty() ? "nothing (waiting for Redis)" : abandoned.c_str(), outcome.c_str());
    }
    std::fflush(stdout);
    // _exit: returning would run ~jthread, which joins, waiting for the job
    // after all. Detached first: the thread is abandoned on purpose, and a
    // finished but unjoined thread is what sanitizers report as a leak.
    for (auto& w : pool) w.detach();
    beat.detach();
    _exit(1);
  }
  // docs:end stop
  bool failed = status.failed;
  lock.unlock();
  pool.clear();  // joins: every worker has left its loop
  beat = {};     // stops and joins the heartbeat
  {
    // Released, so the name can be used again at once; a killed process's
    // lease simply expires after --lease-ms.
    Redis redis(host, port, block + milliseconds(2000));
    std::string why;
    if (redis.connect(why)) {
      try {
        redis.command({"EVAL", kRelease, "1", lease_key(queue, name), lease_token});
      } catch (const std::exception&) {
      }
    }
  }
  if (failed) return 1;
  std::printf("shutdown: complete in %lld ms\n", ms_since(status.stop_at));
  return 0;
}
