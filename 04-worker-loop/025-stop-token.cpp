// 025-stop-token: a worker thread that a stop request wakes at once.
//
// Demonstrates: the shape of seed 002's Syncer in C++20, without its
// deadline. The loop runs on a std::jthread; a dedicated signal thread
// (sigwait) turns SIGTERM/SIGINT into request_stop() on the worker's
// std::stop_source; the wait between jobs is a std::condition_variable_any
// wait that takes the std::stop_token, so a stop ends it immediately instead
// of after the interval. The job in progress still runs to its end (no
// half-done job) and then the worker exits.
//
// Still wrong: nothing bounds the stop. Main waits for the worker for as
// long as its job takes, and the signal thread takes one signal only, so a
// second SIGTERM changes nothing (030 adds the budget and the second
// signal). The job in progress exists only in this process's memory, so
// SIGKILL loses it.
//
// Reproduces: seed 002's Syncer (ticker loop, quit channel) before its
// Stop() waits with a timeout.
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

// One Redis command. An I/O error or an error reply is fatal for this stage
// (040 is the first one that survives a Redis outage).
Reply command(redisContext* c, std::initializer_list<std::string> args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
  if (!r) throw std::runtime_error(std::string("redis: ") + argv[0] + ": " + c->errstr);
  Reply reply(r);
  if (r->type == REDIS_REPLY_ERROR) throw std::runtime_error(std::string("redis: ") + argv[0] + ": " + r->str);
  return reply;
}

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

// Whether the worker is still running, shared between the worker, the
// signal thread and main.
struct Status {
  std::mutex mu;
  std::condition_variable_any cv;  // notified when `finished` turns true
  bool finished = false;           // the worker left its loop
  bool failed = false;             // ... because of an error
  Clock::time_point stop_at{};     // when the stop was requested
};

// Takes one job, if any, and runs it to the end: a stop request does not
// interrupt a job. Returns false if the queue was empty.
bool do_job(redisContext* c, const std::string& queue, milliseconds step) {
  static bool idle = false;  // print "idle" once per empty spell
  Reply popped = command(c, {"LPOP", queue});
  if (popped->type == REDIS_REPLY_NIL) {
    if (!idle) std::printf("idle: queue empty\n");
    idle = true;
    return false;
  }
  idle = false;
  std::string payload(popped->str, popped->len);
  Job job;
  std::string why;
  if (!parse_job(payload, job, why)) {
    std::fprintf(stderr, "job dropped: malformed payload '%s': %s\n", printable(payload).c_str(), why.c_str());
    return true;
  }
  command(c, {"HINCRBY", queue + ":attempts", job.id, "1"});
  std::printf("job %s: start (%d steps)\n", job.id.c_str(), job.steps);
  for (int k = 1; k <= job.steps; ++k) {
    std::this_thread::sleep_for(step);  // the work itself
    command(c, {"HSET", queue + ":steps:" + job.id, "step" + std::to_string(k), "done"});
    std::printf("job %s: step %d/%d\n", job.id.c_str(), k, job.steps);
  }
  command(c, {"SADD", queue + ":done", job.id});
  std::printf("job %s: done\n", job.id.c_str());
  return true;
}

// docs:begin wait
// Sleeps for the interval unless a stop is requested first. This overload of
// wait_for registers a std::stop_callback that notifies the condition
// variable, so request_stop() on another thread ends the wait at once, and
// the check-then-wait race that loses a wake-up cannot happen.
void wait_interval(std::stop_token token, milliseconds interval) {
  std::mutex mu;
  std::condition_variable_any cv;
  std::unique_lock lock(mu);
  cv.wait_for(lock, token, interval, [] { return false; });
}
// docs:end wait

void work(std::stop_token token, redisContext* c, std::string queue, milliseconds interval, milliseconds step,
          Status& status) {
  try {
    // docs:begin loop
    while (!token.stop_requested()) {
      do_job(c, queue, step);  // runs to its end even if a stop arrives
      wait_interval(token, interval);  // ends early on a stop
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
// The first SIGTERM/SIGINT becomes a stop request. sigwait returns in
// ordinary thread context, so unlike a handler this code may lock, allocate
// and print. It takes one signal only: a second one stays blocked and
// pending, and changes nothing.
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
}
// docs:end signals

long long ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 025-stop-token [--redis HOST:PORT] [--queue NAME] [--interval MS] "
                       "[--step-ms MS]");
  auto [host, port] = flags.host_port("--redis", "127.0.0.1:6379");
  std::string queue = queue_flag(flags);
  milliseconds interval = flags.millis("--interval", 1000, 0, 3'600'000);
  milliseconds step = flags.millis("--step-ms", 100, 0, 60'000);
  flags.done();
  std::signal(SIGPIPE, SIG_IGN);  // a closed Redis socket must be an error, not death

  timeval connect_timeout{2, 0};
  redisContext* c = redisConnectWithTimeout(host.c_str(), port, connect_timeout);
  if (!c || c->err) {
    std::fprintf(stderr, "error: cannot connect to Redis at %s:%d: %s\n", host.c_str(), port,
                 c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return 1;
  }

  // docs:begin main
  // Block the stop signals before any thread exists: new threads inherit the
  // mask, so only the signal thread's sigwait ever sees them.
  sigset_t set = stop_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::printf("ready pid=%d redis=%s:%d queue=%s\n", static_cast<int>(getpid()), host.c_str(), port, queue.c_str());
  Status status;
  std::jthread worker(work, c, queue, interval, step, std::ref(status));
  // Detached: it blocks in sigwait for the life of the process.
  std::thread(signal_thread, worker.get_stop_source(), std::ref(status)).detach();

  std::unique_lock lock(status.mu);
  // Until the worker leaves its loop: after a stop request, once its job is
  // done, however long that takes; or by itself (an error).
  status.cv.wait(lock, [&] { return status.finished; });
  // docs:end main
  bool failed = status.failed;
  lock.unlock();
  worker.join();
  redisFree(c);
  if (failed) return 1;
  std::printf("shutdown: complete in %lld ms\n", ms_since(status.stop_at));
  return 0;
}
