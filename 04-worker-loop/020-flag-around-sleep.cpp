// 020-flag-around-sleep: a signal handler sets a flag; the loop checks it
// between jobs.
//
// Demonstrates: the smallest change that makes SIGTERM graceful for a loop.
// The handler only stores to a lock-free atomic (anything else in a handler,
// printf or a lock, is not async-signal-safe). The loop checks the flag
// around its sleep, so the job in progress always finishes: no half-done job,
// and the jobs still queued stay queued for the next run.
//
// Still wrong: the flag is only looked at after the sleep, and the sleep does
// not end early: std::this_thread::sleep_for resumes after the EINTR the
// signal causes. Stopping takes up to one whole interval (plus the rest of
// the job), and nothing bounds it: a long job holds shutdown as long as it
// likes, and a second SIGTERM only sets the same flag again. SIGKILL still
// loses the job in progress: LPOP already removed it from the queue.
//
// Reproduces: seed 002's Syncer with a quit check but a blocking sleep,
// the "slow to stop" worker that a 30 s grace period ends with SIGKILL.
#include <hiredis/hiredis.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "support/flags.hpp"

namespace {

using std::chrono::milliseconds;

// docs:begin handler
// Written by the handler, read by the loop. Lock-free atomics are the only
// shared state a handler may touch; clock_gettime is async-signal-safe.
std::atomic<int> stop_signal{0};
std::atomic<long long> stop_at_ns{0};
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<long long>::is_always_lock_free);

long long now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

extern "C" void on_stop_signal(int sig) {
  if (stop_signal.load() == 0) stop_at_ns.store(now_ns());
  stop_signal.store(sig);
}
// docs:end handler

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

// Takes one job, if any, and runs it to the end. Returns false if the queue
// was empty.
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

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 020-flag-around-sleep [--redis HOST:PORT] [--queue NAME] [--interval MS] "
                       "[--step-ms MS]");
  auto [host, port] = flags.host_port("--redis", "127.0.0.1:6379");
  std::string queue = queue_flag(flags);
  milliseconds interval = flags.millis("--interval", 1000, 0, 3'600'000);
  milliseconds step = flags.millis("--step-ms", 100, 0, 60'000);
  flags.done();
  std::signal(SIGPIPE, SIG_IGN);  // a closed Redis socket must be an error, not death
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // Redis reads and writes resume instead of failing with EINTR
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  timeval connect_timeout{2, 0};
  redisContext* c = redisConnectWithTimeout(host.c_str(), port, connect_timeout);
  if (!c || c->err) {
    std::fprintf(stderr, "error: cannot connect to Redis at %s:%d: %s\n", host.c_str(), port,
                 c ? c->errstr : "out of memory");
    if (c) redisFree(c);
    return 1;
  }
  std::printf("ready pid=%d redis=%s:%d queue=%s\n", static_cast<int>(getpid()), host.c_str(), port, queue.c_str());

  try {
    // docs:begin loop
    while (stop_signal.load() == 0) {
      do_job(c, queue, step);
      std::this_thread::sleep_for(interval);  // a signal does not cut this short
    }
    // docs:end loop
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    redisFree(c);
    return 1;
  }
  std::printf("shutdown: %s noticed after the sleep, loop left\n", stop_signal.load() == SIGINT ? "SIGINT" : "SIGTERM");
  redisFree(c);
  std::printf("shutdown: complete in %lld ms\n", (now_ns() - stop_at_ns.load()) / 1'000'000);
  return 0;
}
