// loadcheck: the seed 003 experiment (vegeta + a rolling update + reading the
// Redis counter), made exact.
//
// Sends N /incr requests with unique ids at a rate, over keep-alive or fresh
// connections, stops the server at a chosen moment (a signal after K requests
// or after T ms), classifies every outcome (200, 5xx, refused, reset,
// timeout), waits for the server to exit, then reads the Redis set of ids and
// prints sent / acknowledged / persisted / lost (acknowledged but not
// persisted, by id) / duplicated, the errors by kind, and the shutdown time.
// Exit status 1 when something acknowledged was lost (or could not be
// checked), 0 otherwise, 2 for bad flags.
//
// Two ways to use it:
//   loadcheck --port P [--pid PID --signal-after K] [--redis HOST:PORT]
//       drives a server that is already running;
//   loadcheck [--start-redis] [--restart] ... -- SERVER-COMMAND ARGS...
//       starts the server itself ("{redis}" in its arguments becomes the
//       Redis address), and with --restart plays a rolling update at the stop
//       point: a replacement instance is started and ready first, then the
//       old one gets the signal, and new connections go to the replacement
//       (after --lb-lag-ms, the load balancer's endpoint-removal lag).
//       Keep-alive connections stay with the old instance until it closes
//       them, as they do behind a Kubernetes Service.
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "load/load.hpp"
#include "support/flags.hpp"

extern char** environ;

namespace {

using load::milliseconds;
using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "error: %s\n", why.c_str());
  std::exit(1);
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("cannot find a free port");
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by SIG") + sigabbrev_np(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Waits up to `timeout` for pid (a child or not) to end. pidfd: no polling.
bool wait_gone(pid_t pid, milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int n = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return n == 1;
}

// A program started by loadcheck: its output is collected (shown with
// --verbose), its "ready port=N" line awaited.
class Child {
 public:
  Child(std::vector<std::string> argv, std::string name) : name_(std::move(name)) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);  // not our ignored SIGPIPE
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    int rc = ::posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    ::close(fds[1]);
    if (rc != 0) die("cannot start " + argv[0] + ": " + std::strerror(rc));
    reader_ = std::thread([this, fd = fds[0]] {
      char buf[4096];
      for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) {
        std::lock_guard lock(mu_);
        out_.append(buf, static_cast<std::size_t>(n));
      }
      ::close(fd);
    });
  }
  ~Child() {
    stop(milliseconds(5000));
    reader_.join();
  }

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // The port from the "ready port=N" line; dies if it does not come.
  int wait_ready(milliseconds timeout) {
    for (auto deadline = Clock::now() + timeout; Clock::now() < deadline;) {
      {
        std::lock_guard lock(mu_);
        // A line starting "ready port=N".
        for (std::size_t at = 0; (at = out_.find("ready port=", at)) != std::string::npos; ++at)
          if (at == 0 || out_[at - 1] == '\n') return std::atoi(out_.c_str() + at + 11);
      }
      if (!status_ && wait_gone(pid_, milliseconds(0))) break;
      std::this_thread::sleep_for(milliseconds(5));
    }
    die(name_ + " did not print a ready line:\n" + output());
  }

  // Status once it has exited within `timeout`, else nullopt.
  std::optional<std::string> wait_exit(milliseconds timeout) {
    if (!status_ && wait_gone(pid_, timeout)) {
      int st = 0;
      if (::waitpid(pid_, &st, 0) == pid_) status_ = describe(st);
    }
    return status_;
  }

  // SIGTERM, then SIGKILL if it does not exit in time.
  void stop(milliseconds timeout) {
    if (status_) return;
    ::kill(pid_, SIGTERM);
    if (!wait_exit(timeout)) {
      ::kill(pid_, SIGKILL);
      wait_exit(milliseconds(5000));
    }
  }

  std::string output() {
    std::lock_guard lock(mu_);
    return out_;
  }

 private:
  std::string name_;
  pid_t pid_ = -1;
  std::optional<std::string> status_;
  std::mutex mu_;
  std::string out_;
  std::thread reader_;
};

void redis_command(const std::string& host, int port, const char* cmd, milliseconds wait) {
  for (auto deadline = Clock::now() + wait;;) {
    redisContext* c = redisConnectWithTimeout(host.c_str(), port, timeval{1, 0});
    if (c != nullptr && c->err == 0) {
      auto* r = static_cast<redisReply*>(redisCommand(c, cmd));
      bool ok = r != nullptr && r->type != REDIS_REPLY_ERROR;
      if (r != nullptr) freeReplyObject(r);
      redisFree(c);
      if (ok) return;
    } else if (c != nullptr) {
      redisFree(c);
    }
    if (Clock::now() >= deadline) die("--redis: cannot reach Redis at " + host + ":" + std::to_string(port));
    std::this_thread::sleep_for(milliseconds(20));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: loadcheck [--requests N] [--rate PER_SECOND] [--connections N] [--fresh]\n"
                       "                 [--id-prefix TEXT] [--timeout-ms MS] [--redis HOST:PORT | --start-redis]\n"
                       "                 [--signal-after K | --signal-at-ms T] [--exit-timeout-ms MS] [--settle-ms MS]\n"
                       "                 [--verbose]\n"
                       "                 (--port P [--pid PID] | [--restart] [--lb-lag-ms MS] -- SERVER ARGS...)\n"
                       "Clears the keys incr:ids and incr:counter in Redis before it starts.");
  load::Options opts;
  opts.requests = static_cast<int>(flags.integer("--requests", 1000, 1, 1'000'000));
  opts.rate = static_cast<double>(flags.integer("--rate", 25, 1, 1'000'000));
  opts.connections = static_cast<int>(flags.integer("--connections", 8, 1, 1024));
  opts.keep_alive = !flags.present("--fresh");
  opts.id_prefix = flags.text("--id-prefix", "r", 64);
  opts.timeout = flags.millis("--timeout-ms", 2000, 1, 600'000);
  const bool start_redis = flags.present("--start-redis");
  const auto [redis_host, redis_port] = flags.host_port("--redis", "127.0.0.1:6379");
  opts.signal_after = static_cast<int>(flags.integer("--signal-after", -1, 0, opts.requests - 1));
  opts.signal_at = flags.millis("--signal-at-ms", -1, 0, 3'600'000);
  opts.exit_timeout = flags.millis("--exit-timeout-ms", 30'000, 1, 3'600'000);
  opts.settle = flags.millis("--settle-ms", 10'000, 0, 3'600'000);
  const bool verbose = flags.present("--verbose");
  const int port = flags.port("--port", 0);
  const auto pid = static_cast<pid_t>(flags.integer("--pid", 0, 1, 4'194'304));
  const bool restart = flags.present("--restart");
  opts.lb_lag = flags.millis("--lb-lag-ms", 0, 0, 3'600'000);
  flags.done();
  const auto& command = flags.rest();
  const bool stopping = opts.signal_after >= 0 || opts.signal_at.count() >= 0;
  if (opts.signal_after >= 0 && opts.signal_at.count() >= 0)
    support::Flags::fail("--signal-at-ms", "give --signal-after or --signal-at-ms, not both");
  if (command.empty() && port == 0) support::Flags::fail("--port", "give --port, or a server command after --");
  if (!command.empty() && port != 0) support::Flags::fail("--port", "not with a server command (it prints its port)");
  if (command.empty() && stopping && pid == 0) support::Flags::fail("--pid", "needed to send the signal");
  if (command.empty() && restart) support::Flags::fail("--restart", "needs a server command after --");
  if (restart && !stopping) support::Flags::fail("--restart", "needs --signal-after or --signal-at-ms");

  ::signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<Child> redis;
  opts.redis_host = redis_host;
  opts.redis_port = redis_port;
  if (start_redis) {
    opts.redis_host = "127.0.0.1";
    opts.redis_port = free_port();
    redis = std::make_unique<Child>(std::vector<std::string>{"redis-server", "--port", std::to_string(opts.redis_port),
                                                             "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                                             "no", "--daemonize", "no"},
                                    "redis-server");
  }
  redis_command(opts.redis_host, opts.redis_port, "DEL incr:ids incr:counter", milliseconds(start_redis ? 5000 : 0));
  const std::string redis_address = opts.redis_host + ":" + std::to_string(opts.redis_port);

  load::Target target;
  std::vector<std::unique_ptr<Child>> servers;
  auto spawn = [&](const std::string& name) {
    std::vector<std::string> args;
    for (auto a : command) {
      for (std::size_t at; (at = a.find("{redis}")) != std::string::npos;) a.replace(at, 7, redis_address);
      args.push_back(a);
    }
    servers.push_back(std::make_unique<Child>(args, name));
    return servers.back()->wait_ready(milliseconds(10'000));
  };
  if (command.empty()) {
    target.port = port;
    target.pid = pid;
    target.wait_exit = [pid](milliseconds t) -> std::optional<std::string> {
      if (wait_gone(pid, t)) return "exited";
      return std::nullopt;
    };
  } else {
    target.port = spawn("server");
    target.pid = stopping ? servers.front()->pid() : 0;
    target.wait_exit = [&servers](milliseconds t) { return servers.front()->wait_exit(t); };
    if (restart) target.start_replacement = [&] { return spawn("replacement"); };
  }

  const load::Report report = load::run(target, opts);
  for (auto& s : servers) s->stop(opts.exit_timeout);  // the replacement, or a server never signalled
  std::printf("%s", report.render(opts).c_str());
  if (verbose)
    for (auto& s : servers) std::printf("--- %s output ---\n%s", s->name().c_str(), s->output().c_str());
  return report.lost > 0 || !report.redis_error.empty() ? 1 : 0;
}
