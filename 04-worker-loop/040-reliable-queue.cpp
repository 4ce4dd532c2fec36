// 040-reliable-queue: the job in progress lives in Redis, not in the
// worker's memory, so even kill -9 cannot lose it.
//
// Demonstrates: the reliable-queue pattern on Redis lists. The worker takes a
// job with BLMOVE, which atomically moves it from the queue to a processing
// list (a job is always in exactly one list), runs it, then marks it done and
// removes it from the processing list in one MULTI/EXEC (the ack). On start,
// and after every reconnect, it moves whatever its processing list still holds
// back to the head of the queue: the job a killed worker was running runs
// again. Results are idempotent (a step writes the same hash field however
// often it runs; done is a set), because delivery is at-least-once: the
// interrupted job runs twice, and the attempts hash counts it. The blocking
// wait for a job replaces the interval and times out after --block-ms, which
// must be shorter than --budget-ms: a stop never waits for more than that.
// A job arriving during the last wait after a stop is handed back untouched.
// Malformed payloads go to a dead-letter list with the reason; a lost Redis
// connection is re-established (one hiredis context, used by one thread).
//
// Still wrong, or left out: one worker per processing list (two processes
// started on the same --queue would requeue each other's jobs on start: 043
// names the list after the worker); stopping while idle takes up to --block-ms.
//
// Reproduces: seed 004's kill -9 problem, solved for a worker; seed 002's
// Syncer shape kept from 030.
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <unistd.h>

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
    return true;
  }

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

// The lists and keys of one queue.
struct Keys {
  explicit Keys(const std::string& q)
      : queue(q), processing(q + ":processing"), dead(q + ":dead"), done(q + ":done"), attempts(q + ":attempts") {}
  std::string steps(const std::string& id) const { return queue + ":steps:" + id; }
  std::string queue, processing, dead, done, attempts;
};

// What the worker is doing, shared between the worker, the signal thread
// and main (which reports it if the budget runs out).
struct Status {
  std::mutex mu;
  std::condition_variable_any cv;  // notified when `finished` turns true
  std::string job;                 // the job in progress, empty between jobs
  int step = 0, steps = 0;
  bool finished = false;           // the worker left its loop
  bool failed = false;             // ... because of an error
  Clock::time_point stop_at{};     // when the stop was requested
  bool forced = false;             // a second signal came: exit now
};

void set_progress(Status& status, const std::string& job, int step, int steps) {
  std::lock_guard lock(status.mu);
  status.job = job;
  status.step = step;
  status.steps = steps;
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
            Status& status) {
  static bool idle = false;  // print "idle" once per empty spell
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
  if (redis.command({"SISMEMBER", k.done, job.id})->integer == 1) {  // delivered twice by a producer
    redis.command({"LREM", k.processing, "1", payload});
    std::printf("job %s: already done, duplicate acknowledged\n", job.id.c_str());
    return true;
  }
  long long attempt = redis.command({"HINCRBY", k.attempts, job.id, "1"})->integer;
  set_progress(status, job.id, 0, job.steps);
  if (attempt == 1)
    std::printf("job %s: start (%d steps)\n", job.id.c_str(), job.steps);
  else
    std::printf("job %s: start (%d steps), attempt %lld: an earlier run did not finish\n", job.id.c_str(),
                job.steps, attempt);
  for (int s = 1; s <= job.steps; ++s) {
    std::this_thread::sleep_for(step);  // the work itself
    // Idempotent: a re-run writes the same field with the same value.
    redis.command({"HSET", k.steps(job.id), "step" + std::to_string(s), "done"});
    set_progress(status, job.id, s, job.steps);
    std::printf("job %s: step %d/%d\n", job.id.c_str(), s, job.steps);
  }
  // docs:begin ack
  // Done and acknowledged together, or neither: a kill between the two
  // cannot leave a finished job in processing (it would run again).
  redis.command({"MULTI"});
  redis.command({"SADD", k.done, job.id});
  redis.command({"LREM", k.processing, "1", payload});
  redis.command({"EXEC"});
  // docs:end ack
  set_progress(status, "", 0, 0);
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

void work(std::stop_token token, Redis& redis, Keys k, milliseconds block, milliseconds step, Status& status) {
  try {
    // docs:begin loop
    while (!token.stop_requested()) {
      try {
        do_job(token, redis, k, block, step, status);  // waits at most `block` for a job
      } catch (const ConnectionLost& e) {
        set_progress(status, "", 0, 0);  // the job, if any, is safe in the processing list
        std::printf("redis: connection lost (%s), reconnecting\n", e.what());
        reconnect(token, redis, k);
      }
    }
    // docs:end loop
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::lock_guard lock(status.mu);
    status.failed = true;
  }
  {
    std::lock_guard lock(status.mu);
    status.finished = true;
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

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 040-reliable-queue [--redis HOST:PORT] [--queue NAME] [--block-ms MS] "
                       "[--step-ms MS] [--budget-ms MS]");
  auto [host, port] = flags.host_port("--redis", "127.0.0.1:6379");
  std::string queue = queue_flag(flags);
  milliseconds block = flags.millis("--block-ms", 500, 1, 60'000);
  milliseconds step = flags.millis("--step-ms", 100, 0, 60'000);
  milliseconds budget = flags.millis("--budget-ms", 5000, 1, 600'000);
  flags.done();
  if (block >= budget)
    support::Flags::fail("--block-ms", "must be shorter than --budget-ms (" + std::to_string(budget.count()) +
                                           " ms): a blocked wait for a job would outlast the stop budget");
  std::signal(SIGPIPE, SIG_IGN);  // a closed Redis socket must be an error, not death

  Keys keys(queue);
  // The read timeout must exceed the BLMOVE timeout, or every idle wait
  // would look like a dead connection.
  Redis redis(host, port, block + milliseconds(2000));
  std::string why;
  if (!redis.connect(why)) {
    std::fprintf(stderr, "error: cannot connect to Redis at %s:%d: %s\n", host.c_str(), port, why.c_str());
    return 1;
  }
  try {
    recover(redis, keys);  // what a killed run of this worker left behind
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }

  // Block the stop signals before any thread exists: new threads inherit the
  // mask, so only the signal thread's sigwait ever sees them.
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::printf("ready pid=%d redis=%s:%d queue=%s\n", static_cast<int>(getpid()), host.c_str(), port, queue.c_str());
  Status status;
  std::jthread worker(work, std::ref(redis), keys, block, step, std::ref(status));
  // Detached: it blocks in sigwait for the life of the process.
  std::thread(signal_thread, worker.get_stop_source(), std::ref(status)).detach();

  std::unique_lock lock(status.mu);
  // Until a stop is requested, or the worker ends by itself (an error).
  status.cv.wait(lock, worker.get_stop_token(), [&] { return status.finished; });
  // docs:begin stop
  // Seed 002's Stop(): wait for the worker, but at most the budget, and not
  // at all after a second signal. What is abandoned here is not lost: it
  // stays in the processing list.
  status.cv.wait_until(lock, status.stop_at + budget, [&] { return status.finished || status.forced; });
  if (!status.finished || status.forced) {
    if (!status.forced) {
      if (status.job.empty())
        std::fprintf(stderr, "shutdown: gave up after %lld ms (budget %lld ms) waiting for Redis\n",
                     ms_since(status.stop_at), static_cast<long long>(budget.count()));
      else
        std::fprintf(stderr, "shutdown: gave up after %lld ms (budget %lld ms): job %s abandoned at step %d/%d; "
                     "it stays in %s and runs again on the next start\n",
                     ms_since(status.stop_at), static_cast<long long>(budget.count()), status.job.c_str(),
                     status.step, status.steps, keys.processing.c_str());
    }
    std::fflush(stdout);
    // _exit: returning would run ~jthread, which joins, waiting for the job
    // after all. Detached first: the thread is abandoned on purpose, and a
    // finished but unjoined thread is what sanitizers report as a leak.
    worker.detach();
    _exit(1);
  }
  // docs:end stop
  bool failed = status.failed;
  lock.unlock();
  worker.join();
  if (failed) return 1;
  std::printf("shutdown: complete in %lld ms\n", ms_since(status.stop_at));
  return 0;
}
