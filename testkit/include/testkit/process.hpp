// testkit/process.hpp - spawn a stage binary, watch what it prints, signal it
// at a chosen moment, and wait for it to exit, all with timeouts.
//
// Every wait is bounded and every failure throws testkit::Failure with a
// message that includes the command line and everything the process printed,
// so a red test says what the program did.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>
#include <regex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace testkit {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Raised when a wait times out or a process does something unexpected.
struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Timeouts are generous bounds, not expectations. Sanitizer presets make
// programs several times slower, so the presets set TESTKIT_TIMEOUT_SCALE.
milliseconds scaled(milliseconds base);

// How a process ended.
struct ExitStatus {
  bool exited = false;  // true: returned/exit()ed; false: killed by a signal
  int code = -1;        // exit code when exited
  int signal = 0;       // terminating signal otherwise

  bool ok() const { return exited && code == 0; }
  bool killed_by(int sig) const { return !exited && signal == sig; }
  std::string str() const;  // "exit 0", "killed by SIGTERM"
};

std::string signal_name(int sig);

// A stdout line and the moment the test kit read it (within a millisecond or
// so of the print on an idle machine: the reader thread polls the pipe).
struct TimedLine {
  Clock::time_point at;
  std::string text;
};

struct SpawnOptions {
  std::vector<std::string> extra_env;  // "NAME=value" added to the environment, or replacing NAME
  std::string cwd;                     // empty: inherit
};

class Process {
 public:
  explicit Process(std::vector<std::string> argv, SpawnOptions options = {});
  ~Process();  // kills (SIGKILL) the process if it is still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }

  // Waits until a *new* stdout line (after the last one a wait consumed)
  // contains `needle`; returns that line. Throws Failure on timeout or if the
  // process exits first.
  std::string expect_line(std::string_view needle, milliseconds timeout);
  // Same with a regular expression; returns the capture groups (0 = line).
  std::vector<std::string> expect_match(const std::regex& re, milliseconds timeout);
  // Non-throwing variant: nullopt on timeout or exit.
  std::optional<std::string> wait_for_line(std::string_view needle, milliseconds timeout);

  // Delivers `sig` to the process. Returns the moment it was sent.
  Clock::time_point send_signal(int sig);

  // Waits for exit; nullopt if still running after `timeout`.
  std::optional<ExitStatus> wait_exit(milliseconds timeout);
  // Waits for exit; throws Failure with the transcript if it does not happen.
  ExitStatus expect_exit(milliseconds timeout);
  // SIGKILL (if running) and reap.
  ExitStatus kill();
  bool running();
  // When the process was reaped (valid once wait_exit returned a status).
  Clock::time_point exit_time() const { return exit_time_; }

  std::string out() const;  // everything printed on stdout so far
  std::string err() const;  // everything printed on stderr so far
  // Every complete stdout line so far, with the moment it was read.
  std::vector<TimedLine> timed_lines() const;
  // Command line, status and output, for failure messages.
  std::string transcript() const;

 private:
  void reader_loop(int out_fd, int err_fd);
  std::optional<std::string> next_line_locked(std::string_view needle, const std::regex* re,
                                              std::vector<std::string>* groups);
  bool reap(int flags);
  void drain_output();

  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<ExitStatus> status_;
  Clock::time_point exit_time_{};

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string out_, err_;
  std::vector<Clock::time_point> out_line_times_;  // one per '\n' in out_
  std::size_t cursor_ = 0;  // stdout offset consumed by expect_line
  bool eof_ = false;
  std::thread reader_;
};

namespace detail {
// The process groups of every Process that is alive (constructed and not yet
// destroyed). The tour runtime ends them all when the tour is signalled; once
// it has taken them, no new Process may start (the constructor blocks until
// the tour exits), except from the calling thread, which runs the cleanups.
std::vector<pid_t> take_live_groups_and_refuse_new();
// Stops these process groups as the course teaches: SIGTERM to each, up to
// 500 ms for them to end, SIGKILL for what is left (grandchildren too).
// Async-signal-safe: the tour's signal thread and the stop handler of every
// other program that starts processes (process.cpp) both use it.
void end_groups(const pid_t* groups, std::size_t n);
}  // namespace detail

// Live processes (zombies excluded) whose environment holds `entry`
// ("NAME=value"), each as "PID COMMAND LINE": what a program started, found
// again after it is gone (SpawnOptions::extra_env marks them; children
// inherit the mark). Blind to a process that rewrites its environment
// (redis-server does): see adopt_orphans().
std::vector<std::string> processes_with_env(const std::string& entry);

// Makes this process the reaper of its orphaned descendants
// (PR_SET_CHILD_SUBREAPER): a process whose parent dies is re-parented here
// instead of to init, so that what a program left running can be found after
// it is gone, whatever it did to its environment (redis-server rewrites it
// with its process title).
void adopt_orphans();

// Live children of this process that no Process of it started: the orphans
// adopted since adopt_orphans(), each as "PID COMMAND LINE". Reaps the ones
// that have ended.
std::vector<std::string> adopted_children();

// A program run to completion: how it ended and what it printed.
struct Finished {
  ExitStatus status;
  std::string out, err;
  std::string transcript;  // command, status and output, for messages
};

// Runs argv and waits (bounded) for it to exit; throws Failure with the
// transcript if it is still running after `timeout`. For programs that are
// expected to end on their own, such as a stage refusing a bad flag.
Finished run_to_exit(std::vector<std::string> argv, milliseconds timeout = milliseconds(10000));

}  // namespace testkit
