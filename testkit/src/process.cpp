#include "testkit/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

extern char** environ;

namespace testkit {
namespace {

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

[[noreturn]] void fail_errno(const std::string& what) {
  throw Failure(what + ": " + std::strerror(errno));
}

std::string tail(const std::string& s, std::size_t max = 6000) {
  if (s.size() <= max) return s;
  return "[... " + std::to_string(s.size() - max) + " bytes ...]\n" + s.substr(s.size() - max);
}

// See detail::take_live_groups_and_refuse_new().
std::mutex registry_mu;
std::vector<pid_t> registry;
bool registry_closed = false;
std::thread::id registry_closer;  // the one thread that may still start processes (cleanups)

// The same process groups, readable from a signal handler (no lock): a slot
// holds a group or 0. Written under registry_mu, so by one thread at a time.
constexpr std::size_t kSlots = 1024;
std::atomic<pid_t> live_slots[kSlots];

void slot_store(pid_t from, pid_t to) {
  for (auto& slot : live_slots) {
    pid_t expected = from;
    if (slot.compare_exchange_strong(expected, to)) return;
  }
}

void unregister(pid_t pid) {
  std::lock_guard lock(registry_mu);
  std::erase(registry, pid);
  slot_store(pid, 0);
}

// The last resort of a program that starts processes and is stopped by a
// signal it does not take itself: a test binary interrupted (Ctrl-C, a
// `timeout`, a closed terminal), a load tool, a bench. Each Process runs in
// a process group of its own, so the signal does not reach it, and without
// this it outlives the program (a redis-server left listening, a stage still
// running). Stopped as the tour stops them (detail::end_groups); then the
// program dies of the signal it got, as it would have without this handler.
// Only async-signal-safe calls. The tour takes these signals itself (sigwait with
// them blocked: this handler never runs there), and Catch2's handler, while
// a test runs, reports the test and then raises the signal again for this one.
extern "C" void stop_processes_then_die(int sig) {
  const int saved_errno = errno;
  pid_t groups[kSlots];
  std::size_t n = 0;
  for (auto& slot : live_slots)
    if (const pid_t g = slot.load(); g > 0) groups[n++] = g;
  detail::end_groups(groups, n);
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(sig, &dfl, nullptr);
  errno = saved_errno;
  ::raise(sig);  // blocked until this handler returns, then the default action
}

// Installed before main() (so before Catch2 saves the handlers it chains to),
// for the signals that are still at their default action: a program that
// ignores one, or handles it, keeps its choice.
[[maybe_unused]] const bool stop_handler_installed = [] {
  struct sigaction sa{};
  sa.sa_handler = stop_processes_then_die;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, sig);  // one cleanup at a time
  sa.sa_flags = SA_RESTART;
  bool any = false;
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction old{};
    if (::sigaction(sig, nullptr, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL)
      any = ::sigaction(sig, &sa, nullptr) == 0 || any;
  }
  return any;
}();

}  // namespace

void detail::end_groups(const pid_t* groups, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) ::kill(-groups[i], SIGTERM);
  timespec start{}, now{};
  ::clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    bool all_ended = true;
    for (std::size_t i = 0; i < n; ++i) {
      siginfo_t info{};
      // Ended: a zombie (si_pid set), or already reaped by another thread (ECHILD).
      if (::waitid(P_PID, static_cast<id_t>(groups[i]), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0)
        all_ended = false;
    }
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const long long waited_ms = (now.tv_sec - start.tv_sec) * 1000LL + (now.tv_nsec - start.tv_nsec) / 1'000'000;
    if (all_ended || waited_ms >= 500) break;
    const timespec step{0, 5'000'000};
    ::nanosleep(&step, nullptr);
  }
  for (std::size_t i = 0; i < n; ++i) ::kill(-groups[i], SIGKILL);  // what is left, grandchildren too
}

std::vector<pid_t> detail::take_live_groups_and_refuse_new() {
  std::lock_guard lock(registry_mu);
  registry_closed = true;
  registry_closer = std::this_thread::get_id();
  return registry;
}

namespace {

// Every process in /proc, as (pid, state, parent pid); `take` says whether
// to list it, and those it takes are returned as "PID COMMAND LINE".
template <typename Take>
std::vector<std::string> list_processes(Take take) {
  std::vector<std::string> found;
  DIR* proc = ::opendir("/proc");
  if (!proc) return found;
  while (dirent* e = ::readdir(proc)) {
    const std::string pid = e->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat("/proc/" + pid + "/stat");
    std::string st;
    std::getline(stat, st);
    const auto paren = st.rfind(')');  // the command name may hold anything
    if (paren == std::string::npos || paren + 2 >= st.size()) continue;  // gone meanwhile
    std::istringstream rest(st.substr(paren + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (!take(static_cast<pid_t>(std::stoi(pid)), state, ppid)) continue;
    std::ifstream cmd("/proc/" + pid + "/cmdline", std::ios::binary);
    std::string line((std::istreambuf_iterator<char>(cmd)), std::istreambuf_iterator<char>());
    for (char& c : line)
      if (c == '\0') c = ' ';
    found.push_back(pid + " " + line);
  }
  ::closedir(proc);
  return found;
}

}  // namespace

std::vector<std::string> processes_with_env(const std::string& entry) {
  return list_processes([&](pid_t pid, char state, pid_t) {
    if (state == 'Z') return false;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
    const std::string all((std::istreambuf_iterator<char>(env)), std::istreambuf_iterator<char>());
    return all.find(entry) != std::string::npos;
  });
}

void adopt_orphans() {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) fail_errno("prctl(PR_SET_CHILD_SUBREAPER)");
}

std::vector<std::string> adopted_children() {
  std::vector<pid_t> ours;
  {
    std::lock_guard lock(registry_mu);
    ours = registry;
  }
  const pid_t self = ::getpid();
  return list_processes([&](pid_t pid, char state, pid_t ppid) {
    if (ppid != self || std::find(ours.begin(), ours.end(), pid) != ours.end()) return false;
    if (state == 'Z') {  // an adopted orphan that ended: reap it
      ::waitpid(pid, nullptr, WNOHANG);
      return false;
    }
    return true;
  });
}

milliseconds scaled(milliseconds base) {
  static const double factor = [] {
    const char* s = std::getenv("TESTKIT_TIMEOUT_SCALE");
    double f = s ? std::atof(s) : 1.0;
    return f >= 1.0 ? f : 1.0;
  }();
  return milliseconds(static_cast<long long>(static_cast<double>(base.count()) * factor));
}

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::string ExitStatus::str() const {
  if (exited) return "exit " + std::to_string(code);
  return "killed by " + signal_name(signal);
}

Process::Process(std::vector<std::string> argv, SpawnOptions options) : argv_(std::move(argv)) {
  if (argv_.empty()) throw Failure("Process: empty argv");
  int out_pipe[2], err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) fail_errno("pipe2");
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) fail_errno("pipe2");

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  if (!options.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, options.cwd.c_str());

  // The child starts with every signal unblocked and at its default action,
  // whatever the test process blocked or ignored (it ignores SIGPIPE), and in
  // a process group of its own so that cleanup reaches its children too.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  // The inherited environment, with each extra "NAME=value" in place of the
  // inherited NAME (getenv() would return the first of two).
  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) {
    const std::string_view entry(*e);
    const auto name = entry.substr(0, entry.find('=') + 1);
    if (std::none_of(options.extra_env.begin(), options.extra_env.end(),
                     [&](const std::string& x) { return x.rfind(name, 0) == 0; }))
      env_store.emplace_back(entry);
  }
  for (auto& e : options.extra_env) env_store.push_back(e);
  std::vector<char*> envp, args;
  for (auto& e : env_store) envp.push_back(e.data());
  envp.push_back(nullptr);
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);

  // Spawned under the registry lock, so that a tour stopping on a signal
  // either sees this process or prevents it from starting.
  std::unique_lock registry_lock(registry_mu);
  if (registry_closed && std::this_thread::get_id() != registry_closer) {
    // The tour is ending on a signal and about to exit: start nothing more.
    registry_lock.unlock();
    for (;;) ::pause();
  }
  int rc = ::posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), envp.data());
  if (rc == 0) {
    registry.push_back(pid_);
    slot_store(0, pid_);
  }
  registry_lock.unlock();
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    errno = rc;
    fail_errno("cannot start " + argv_[0]);
  }
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  reader_ = std::thread([this, o = out_pipe[0], e = err_pipe[0]] { reader_loop(o, e); });
}

Process::~Process() {
  if (!status_) {
    ::kill(-pid_, SIGKILL);  // the whole process group
    ::kill(pid_, SIGKILL);
    reap(0);
  } else {
    ::kill(-pid_, SIGKILL);  // leftover children in the group, if any
  }
  if (reader_.joinable()) reader_.join();
  close_fd(pidfd_);
  unregister(pid_);
}

void Process::reader_loop(int out_fd, int err_fd) {
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  int open_fds = 2;
  char buf[4096];
  while (open_fds > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        const auto now = Clock::now();
        std::lock_guard lock(mu_);
        (i == 0 ? out_ : err_).append(buf, static_cast<std::size_t>(n));
        if (i == 0)  // when each stdout line arrived, for timelines
          for (ssize_t k = 0; k < n; ++k)
            if (buf[k] == '\n') out_line_times_.push_back(now);
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
    cv_.notify_all();
  }
  std::lock_guard lock(mu_);
  eof_ = true;
  cv_.notify_all();
}

std::vector<TimedLine> Process::timed_lines() const {
  std::lock_guard lock(mu_);
  std::vector<TimedLine> lines;
  std::size_t begin = 0;
  for (const auto& at : out_line_times_) {
    const std::size_t nl = out_.find('\n', begin);
    if (nl == std::string::npos) break;
    lines.push_back({at, out_.substr(begin, nl - begin)});
    begin = nl + 1;
  }
  return lines;
}

std::optional<std::string> Process::next_line_locked(std::string_view needle, const std::regex* re,
                                                     std::vector<std::string>* groups) {
  while (true) {
    std::size_t nl = out_.find('\n', cursor_);
    if (nl == std::string::npos) return std::nullopt;
    std::string line = out_.substr(cursor_, nl - cursor_);
    cursor_ = nl + 1;
    if (re) {
      std::smatch m;
      if (std::regex_search(line, m, *re)) {
        groups->clear();
        for (auto& g : m) groups->push_back(g.str());
        return line;
      }
    } else if (line.find(needle) != std::string::npos) {
      return line;
    }
  }
}

std::optional<std::string> Process::wait_for_line(std::string_view needle, milliseconds timeout) {
  auto deadline = Clock::now() + scaled(timeout);
  std::unique_lock lock(mu_);
  while (true) {
    if (auto line = next_line_locked(needle, nullptr, nullptr)) return line;
    if (eof_) return std::nullopt;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      if (auto line = next_line_locked(needle, nullptr, nullptr)) return line;
      return std::nullopt;
    }
  }
}

std::string Process::expect_line(std::string_view needle, milliseconds timeout) {
  if (auto line = wait_for_line(needle, timeout)) return *line;
  throw Failure("no stdout line containing '" + std::string(needle) + "' within " +
                std::to_string(scaled(timeout).count()) + " ms\n" + transcript());
}

std::vector<std::string> Process::expect_match(const std::regex& re, milliseconds timeout) {
  auto deadline = Clock::now() + scaled(timeout);
  std::vector<std::string> groups;
  {
    std::unique_lock lock(mu_);
    while (true) {
      if (next_line_locked({}, &re, &groups)) return groups;
      if (eof_ || cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
        if (next_line_locked({}, &re, &groups)) return groups;
        break;
      }
    }
  }
  throw Failure("no stdout line matching the expected pattern within " +
                std::to_string(scaled(timeout).count()) + " ms\n" + transcript());
}

Clock::time_point Process::send_signal(int sig) {
  auto now = Clock::now();
  if (!status_ && ::kill(pid_, sig) != 0 && errno != ESRCH) fail_errno("kill");
  return now;
}

bool Process::reap(int flags) {
  if (status_) return true;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, flags);
  } while (r < 0 && errno == EINTR);
  if (r != pid_) return false;
  exit_time_ = Clock::now();
  ExitStatus s;
  if (WIFEXITED(st)) {
    s.exited = true;
    s.code = WEXITSTATUS(st);
  } else if (WIFSIGNALED(st)) {
    s.signal = WTERMSIG(st);
  }
  status_ = s;
  return true;
}

void Process::drain_output() {
  // The exit status can be collected before the reader thread has read the
  // last bytes from the pipes. Wait (bounded: a grandchild may still hold the
  // pipe open) until they reach end-of-file, so out() and err() are complete.
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, scaled(milliseconds(2000)), [&] { return eof_; });
}

std::optional<ExitStatus> Process::wait_exit(milliseconds timeout) {
  if (reap(WNOHANG)) {
    drain_output();
    return status_;
  }
  auto deadline = Clock::now() + scaled(timeout);
  while (true) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left < 0) left = 0;
    if (pidfd_ >= 0) {
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left));  // readable when the process exits
    } else {
      ::usleep(1000);  // kernels without pidfd: poll the exit status
    }
    if (reap(WNOHANG)) {
      drain_output();
      return status_;
    }
    if (Clock::now() >= deadline) return std::nullopt;
  }
}

ExitStatus Process::expect_exit(milliseconds timeout) {
  if (auto s = wait_exit(timeout)) return *s;
  throw Failure("process still running after " + std::to_string(scaled(timeout).count()) +
                " ms\n" + transcript());
}

ExitStatus Process::kill() {
  if (!status_) {
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    reap(0);
  }
  drain_output();
  return *status_;
}

bool Process::running() { return !reap(WNOHANG); }

std::string Process::out() const {
  std::lock_guard lock(mu_);
  return out_;
}

std::string Process::err() const {
  std::lock_guard lock(mu_);
  return err_;
}

Finished run_to_exit(std::vector<std::string> argv, milliseconds timeout) {
  Process p(std::move(argv));
  ExitStatus status = p.expect_exit(timeout);
  return {status, p.out(), p.err(), p.transcript()};
}

std::string Process::transcript() const {
  std::ostringstream s;
  s << "command:";
  for (auto& a : argv_) s << ' ' << a;
  s << "\npid " << pid_ << ", " << (status_ ? status_->str() : std::string("still running"));
  std::lock_guard lock(mu_);
  s << "\n--- stdout ---\n" << tail(out_) << "\n--- stderr ---\n" << tail(err_) << "\n--------------";
  return s.str();
}

}  // namespace testkit
