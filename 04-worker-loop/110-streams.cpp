// 110-streams: the same guarantees from the primitive Redis has for them.
//
// Demonstrates: 100's pool on a Redis stream with a consumer group instead
// of lists. XREADGROUP hands each entry to one consumer and keeps it in the
// group's pending entries list (PEL) until XACK: the processing list, kept
// by Redis. XAUTOCLAIM with a minimum idle time (--min-idle-ms) takes over
// entries whose consumer has gone quiet: the lease and the reaper in one
// command, with no name to reserve (each process's consumers get a random
// suffix). The heartbeat keeps a live worker's entry fresh with XCLAIM
// JUSTID, and the delivery count Redis keeps per entry is the attempt
// count of the dead-letter rule. The claim key, the idempotent steps and
// the done set stay: a stream, too, delivers at least once.
//
// Still wrong, or left out: consumers of dead processes stay in the group
// (harmless, listed by XINFO CONSUMERS) until an operator deletes them;
// acknowledged entries are deleted (XDEL) so the stream holds only work.
//
// Reproduces: what a list-based reliable queue rebuilds by hand in 060-100.
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

// The keys of one queue, as one worker of the pool sees them: the stream
// <queue> read by the group "workers", one consumer per worker thread.
const char* const kGroup = "workers";
std::string consumer_name(const std::string& prefix, int worker) { return prefix + "-" + std::to_string(worker); }

struct Keys {
  Keys(const std::string& q, const std::string& consumer_prefix, int worker)
      : queue(q), consumer(consumer_name(consumer_prefix, worker)), dead(q + ":dead"), done(q + ":done"),
        attempts(q + ":attempts") {}
  std::string steps(const std::string& id) const { return queue + ":steps:" + id; }
  std::string claim(const std::string& id) const { return queue + ":claim:" + id; }
  std::string queue, consumer, dead, done, attempts;
};

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
  std::vector<std::string> entries;   // each worker's stream entry in progress, empty between jobs
  int running = 0;                  // workers still in their loop
  bool failed = false;              // one of them hit an error
  Clock::time_point stop_at{};      // when the stop was requested
  bool forced = false;             // a second signal came: exit now
};

void set_progress(Status& status, int worker, const std::string& job, int step, int steps) {
  std::lock_guard lock(status.mu);
  status.workers[static_cast<std::size_t>(worker)] = {job, step, steps};
}

void set_entry(Status& status, int worker, const std::string& entry) {
  std::lock_guard lock(status.mu);
  status.entries[static_cast<std::size_t>(worker)] = entry;
}

std::string random_token() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

// docs:begin group
// The group is created once, by whichever worker starts first, reading the
// stream from its beginning; MKSTREAM creates an empty stream if producers
// have not written yet. BUSYGROUP means another worker was first.
void create_group(Redis& redis, const std::string& queue) {
  try {
    redis.command({"XGROUP", "CREATE", queue, kGroup, "0", "MKSTREAM"});
  } catch (const ConnectionLost&) {
    throw;
  } catch (const std::exception& e) {
    if (std::string_view(e.what()).find("BUSYGROUP") == std::string_view::npos) throw;
  }
}
// docs:end group

// docs:begin renew-claims
// The claims of the jobs this process is running live as long as it does.
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
// A running job's entry must not look idle, or XAUTOCLAIM would hand it to
// another worker: three times per --min-idle-ms, XCLAIM it to its own
// consumer, which resets its idle time (JUSTID: without counting a
// delivery), and extend its claim key. It runs through the stop too: the
// jobs being finished are still this process's.
void heartbeat(std::stop_token token, std::string host, int port, std::string queue, std::string consumer_prefix,
               std::string owner, milliseconds min_idle, Status& status) {
  Redis redis(host, port, min_idle);
  bool connected = false;
  while (!token.stop_requested()) {
    try {
      std::string why;
      if (!connected) connected = redis.connect(why);
      if (connected) {
        std::vector<std::string> entries;
        {
          std::lock_guard lock(status.mu);
          entries = status.entries;
        }
        for (std::size_t i = 0; i < entries.size(); ++i)
          if (!entries[i].empty())
            redis.command({"XCLAIM", queue, kGroup, consumer_name(consumer_prefix, static_cast<int>(i)), "0",
                           entries[i], "JUSTID"});
        renew_claims(redis, queue, owner, min_idle, status);
      }
    } catch (const ConnectionLost&) {
      connected = false;  // retried on the next beat
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: heartbeat: %s\n", e.what());
    }
    wait_interval(token, min_idle / 3);
  }
}
// docs:end heartbeat

// docs:begin dead-letter
// Parked with the reason, atomically with the ack: XACK takes it out of
// the pending entries, XDEL out of the stream.
void dead_letter(Redis& redis, const Keys& k, const std::string& entry, const std::string& payload,
                 const std::string& why) {
  redis.command({"MULTI"});
  redis.command({"RPUSH", k.dead, "reason=" + why + " payload=" + payload});
  redis.command({"XACK", k.queue, kGroup, entry});
  redis.command({"XDEL", k.queue, entry});
  redis.command({"EXEC"});
  std::fprintf(stderr, "job dead-lettered: '%s': %s\n", printable(payload).c_str(), why.c_str());
}
// docs:end dead-letter

// docs:begin give-back
// Gives an entry up without acking it: its idle time is set to
// --min-idle-ms, so the next XAUTOCLAIM of any worker takes it at once.
void give_back(Redis& redis, const Keys& k, const std::string& entry, milliseconds min_idle) {
  redis.command({"XCLAIM", k.queue, kGroup, k.consumer, "0", entry, "IDLE", std::to_string(min_idle.count()),
                 "JUSTID"});
}
// docs:end give-back
// An entry of the stream: [id, [field, value, ...]]; the payload is the
// value of the field "payload" (empty if there is none: malformed).
std::string entry_payload(const redisReply* e) {
  const redisReply* fields = e->element[1];
  if (fields->type != REDIS_REPLY_ARRAY) return "";
  for (std::size_t i = 0; i + 1 < fields->elements; i += 2)
    if (std::string_view(fields->element[i]->str, fields->element[i]->len) == "payload")
      return std::string(fields->element[i + 1]->str, fields->element[i + 1]->len);
  return "";
}

// Takes one job, waiting at most `block` for it, and runs it to the end: a
// stop request does not interrupt a job. Returns false if none came.
bool do_job(std::stop_token token, Redis& redis, const Keys& k, milliseconds block, milliseconds step,
            int max_attempts, const std::string& owner, milliseconds min_idle, Status& status, int worker,
            bool& idle) {
  // docs:begin take
  // First an entry some consumer took and then went quiet on for
  // --min-idle-ms (killed, or gave it back); else a new one, waiting at most
  // `block`. Either way Redis now lists it as pending for this consumer
  // until XACK, so no crash can lose it.
  std::string entry, payload;
  long long deliveries = 1;
  Reply claimed = redis.command({"XAUTOCLAIM", k.queue, kGroup, k.consumer, std::to_string(min_idle.count()),
                                 "0-0", "COUNT", "1"});
  if (claimed->element[1]->elements == 1) {
    const redisReply* e = claimed->element[1]->element[0];
    entry.assign(e->element[0]->str, e->element[0]->len);
    payload = entry_payload(e);
    // The delivery count, kept by Redis, counts this delivery too.
    Reply pending = redis.command({"XPENDING", k.queue, kGroup, entry, entry, "1"});
    if (pending->elements == 1) deliveries = pending->element[0]->element[3]->integer;
    std::printf("reclaimed: '%s' (entry %s, delivery %lld) had been idle for %lld ms\n",
                printable(payload).c_str(), entry.c_str(), deliveries, static_cast<long long>(min_idle.count()));
  } else {
    Reply read = redis.command({"XREADGROUP", "GROUP", kGroup, k.consumer, "COUNT", "1", "BLOCK",
                                std::to_string(block.count()), "STREAMS", k.queue, ">"});
    if (read->type == REDIS_REPLY_NIL) {
      if (!idle) std::printf("idle: queue empty\n");
      idle = true;
      return false;
    }
    const redisReply* e = read->element[0]->element[1]->element[0];
    entry.assign(e->element[0]->str, e->element[0]->len);
    payload = entry_payload(e);
  }
  // docs:end take
  idle = false;
  set_entry(status, worker, entry);
  if (token.stop_requested()) {  // it came in while we waited, after the stop: not ours to start
    give_back(redis, k, entry, min_idle);
    set_entry(status, worker, "");
    std::printf("shutdown: '%s' handed back to the queue untouched\n", printable(payload).c_str());
    return true;
  }
  Job job;
  std::string why;
  if (!parse_job(payload, job, why)) {
    dead_letter(redis, k, entry, payload, why);
    set_entry(status, worker, "");
    return true;
  }
  // docs:begin claim
  // Exclusive: of all the workers holding a copy of this id, one gets the
  // claim. The others give their entry back and look again later.
  if (redis.command({"SET", k.claim(job.id), owner, "NX", "PX", std::to_string(min_idle.count())})->type ==
      REDIS_REPLY_NIL) {
    give_back(redis, k, entry, min_idle);
    set_entry(status, worker, "");
    std::printf("job %s: claimed by another worker, requeued\n", job.id.c_str());
    wait_interval(token, block);  // not a busy loop when it is the only job left
    return true;
  }
  if (redis.command({"SISMEMBER", k.done, job.id})->integer == 1) {  // delivered twice by a producer
    redis.command({"MULTI"});
    redis.command({"XACK", k.queue, kGroup, entry});
    redis.command({"XDEL", k.queue, entry});
    redis.command({"DEL", k.claim(job.id)});
    redis.command({"EXEC"});
    set_entry(status, worker, "");
    std::printf("job %s: already done, duplicate acknowledged\n", job.id.c_str());
    return true;
  }
  // docs:end claim
  // docs:begin cap
  // The delivery count is Redis's: every XAUTOCLAIM of an entry adds one.
  // Delivered more than --max-attempts times means that many runs were
  // interrupted: parked, with why.
  if (deliveries > max_attempts) {
    dead_letter(redis, k, entry, payload,
                "deliveries: " + std::to_string(deliveries) + ", never finished (--max-attempts " +
                    std::to_string(max_attempts) + ")");
    redis.command({"DEL", k.claim(job.id)});
    set_entry(status, worker, "");
    return true;
  }
  long long attempt = redis.command({"HINCRBY", k.attempts, job.id, "1"})->integer;
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
    redis.command({"HSET", k.steps(job.id), "step" + std::to_string(s), "done"});
    set_progress(status, worker, job.id, s, job.steps);
    std::printf("job %s: step %d/%d\n", job.id.c_str(), s, job.steps);
  }
  // docs:begin ack
  // Done and acknowledged together, or neither: a kill between the two
  // cannot leave a finished job pending (it would run again).
  redis.command({"MULTI"});
  redis.command({"SADD", k.done, job.id});
  redis.command({"XACK", k.queue, kGroup, entry});
  redis.command({"XDEL", k.queue, entry});
  redis.command({"DEL", k.claim(job.id)});
  redis.command({"EXEC"});
  // docs:end ack
  set_progress(status, worker, "", 0, 0);
  set_entry(status, worker, "");
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
// The entry this worker was running, if the server still has it, is
// pending and idle: XAUTOCLAIM hands it out again after --min-idle-ms.
void reconnect(std::stop_token token, Redis& redis) {
  milliseconds pause{50};
  while (!token.stop_requested()) {
    std::string why;
    if (redis.connect(why)) {
      std::printf("redis: reconnected\n");
      return;
    }
    wait_interval(token, pause);
    pause = std::min(pause * 2, milliseconds(1000));
  }
}
// docs:end reconnect

// One worker of the pool: its own connection (a hiredis context is not
// thread-safe), its own consumer in the group, the pool's shared stop token.
void work(std::stop_token token, std::string host, int port, Keys k, milliseconds block, milliseconds step,
          int max_attempts, std::string owner, milliseconds min_idle, Status& status, int worker) {
  Redis redis(host, port, block + milliseconds(2000));
  bool idle = false;
  try {
    std::string why;
    if (!redis.connect(why)) {
      std::printf("redis: cannot connect (%s), retrying\n", why.c_str());
      reconnect(token, redis);
    }
    // docs:begin loop
    while (!token.stop_requested()) {
      {
        std::lock_guard lock(status.mu);  // a new connection after a reconnect has a new id
        status.client_ids[static_cast<std::size_t>(worker)] = redis.id();
      }
      try {
        // waits at most `block` for a job
        do_job(token, redis, k, block, step, max_attempts, owner, min_idle, status, worker, idle);
      } catch (const ConnectionLost& e) {
        set_progress(status, worker, "", 0, 0);  // the entry, if any, is pending in the group
        set_entry(status, worker, "");
        std::printf("redis: connection lost (%s), reconnecting\n", e.what());
        reconnect(token, redis);
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
// blocked in XREADGROUP gets a nil reply now instead of at --block-ms.
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
// At the budget: each abandoned entry is given back (its idle time set to
// --min-idle-ms) and its claim released, so any worker takes it at once.
std::string hand_back(const std::string& host, int port, const std::string& queue, const std::string& prefix,
                      const Status& status, milliseconds min_idle) {
  Redis redis(host, port, milliseconds(1000));
  std::string why;
  if (!redis.connect(why))
    return "not handed back (" + why + "): XAUTOCLAIM takes them after --min-idle-ms";
  try {
    for (std::size_t i = 0; i < status.entries.size(); ++i) {
      if (status.entries[i].empty()) continue;
      redis.command({"XCLAIM", queue, kGroup, consumer_name(prefix, static_cast<int>(i)), "0", status.entries[i],
                     "IDLE", std::to_string(min_idle.count()), "JUSTID"});
      if (!status.workers[i].job.empty()) redis.command({"DEL", queue + ":claim:" + status.workers[i].job});
    }
  } catch (const std::exception& e) {
    return std::string("not handed back (") + e.what() + "): XAUTOCLAIM takes them after --min-idle-ms";
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

}  // namespace

// GCC 12 reports std::stop_source's constructor, inlined here, as reading
// itself uninitialized (a false positive of -Wmaybe-uninitialized).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 110-streams [--redis HOST:PORT] [--queue NAME] [--workers N] [--name NAME] "
                       "[--min-idle-ms MS] [--max-attempts N] [--block-ms MS] [--step-ms MS] [--budget-ms MS]");
  auto [host, port] = flags.host_port("--redis", "127.0.0.1:6379");
  std::string queue = queue_flag(flags);
  int workers = static_cast<int>(flags.integer("--workers", 4, 1, 64));
  std::string name = name_flag(flags);
  milliseconds block = flags.millis("--block-ms", 500, 1, 60'000);
  milliseconds step = flags.millis("--step-ms", 100, 0, 60'000);
  milliseconds budget = flags.millis("--budget-ms", 5000, 1, 600'000);
  milliseconds min_idle = flags.millis("--min-idle-ms", 10'000, 30, 600'000);
  int max_attempts = static_cast<int>(flags.integer("--max-attempts", 5, 1, 1000));
  flags.done();
  if (block >= budget)
    support::Flags::fail("--block-ms", "must be shorter than --budget-ms (" + std::to_string(budget.count()) +
                                           " ms): a blocked wait for a job would outlast the stop budget");
  std::signal(SIGPIPE, SIG_IGN);  // a closed Redis socket must be an error, not death

  // Consumers are per process, never reused: a name needs no lease.
  const std::string owner = random_token();
  const std::string prefix = name + "-" + owner;
  {
    Redis redis(host, port, block + milliseconds(2000));
    std::string why;
    if (!redis.connect(why)) {
      std::fprintf(stderr, "error: cannot connect to Redis at %s:%d: %s\n", host.c_str(), port, why.c_str());
      return 1;
    }
    try {
      create_group(redis, queue);
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
  status.entries.resize(static_cast<std::size_t>(workers));
  status.running = workers;
  // docs:begin pool
  // One stop source for the whole pool: the signal thread's request_stop()
  // reaches every worker's waits at once.
  std::stop_source stop;
  std::stop_callback unblock(stop.get_token(), [&] { unblock_workers(host, port, status); });
  std::vector<std::jthread> pool;
  for (int i = 0; i < workers; ++i)
    pool.emplace_back(work, stop.get_token(), host, port, Keys(queue, prefix, i), block, step, max_attempts,
                      owner, min_idle, std::ref(status), i);
  // docs:end pool
  // Detached: it blocks in sigwait for the life of the process.
  std::thread(signal_thread, stop, std::ref(status)).detach();
  // Its own stop source: it must outlive the workers' stop.
  std::jthread beat(heartbeat, host, port, queue, prefix, owner, min_idle, std::ref(status));

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
                     std::to_string(w.step) + "/" + std::to_string(w.steps) + " (entry " + status.entries[i] +
                     ")";
      }
      std::string outcome = hand_back(host, port, queue, prefix, status, min_idle);
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
  if (failed) return 1;
  std::printf("shutdown: complete in %lld ms\n", ms_since(status.stop_at));
  return 0;
}
