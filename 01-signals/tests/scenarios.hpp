// The scenarios of chapter 01, shared by the tests (which assert on them)
// and the tour (which prints them), so both show the same thing.
#pragma once

#include <signal.h>

#include <optional>
#include <string>
#include <vector>

#include "testkit/process.hpp"

namespace ch01 {

using testkit::milliseconds;

// Path of a stage binary of this chapter, e.g. stage("010-naive-exit").
std::string stage(const std::string& name);
extern const std::vector<std::string> kRecordStages;        // 010..040: the record writers
extern const std::vector<std::string> kSignalThreadStages;  // 030..040: those with a signal thread

// A temporary directory, removed with its contents.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// What a record file holds: how many records began and ended, and whether
// the last one is torn (a BEGIN without its END).
struct RecordFile {
  int begun = 0;
  int ended = 0;
  bool torn() const { return begun != ended; }
  static RecordFile read(const std::string& path);
};

// How a run ended after the scenario's signals.
struct Outcome {
  testkit::ExitStatus status;
  bool stopped_on_its_own = true;  // false: still running at the bound, SIGKILLed
  long long stop_ms = 0;           // first signal -> exit
  long long forced_ms = 0;         // second signal -> exit (second_signal only)
  RecordFile file;
  std::string records;     // the record file's contents
  std::string stdout_text; // what the stage printed, temp paths shown as <tmp>
  std::string ready_line;  // the stage's "ready pid=..." line
  std::string transcript;  // command, status, stdout, stderr: for messages
  bool child_own_group = false;       // behind an init: the child leads its own process group
  bool child_has_foreground = false;  // behind an init on a terminal: the child's group is the foreground
};

struct RecordOptions {
  long long record_ms = 500;   // time to write one record
  long long flush_ms = 4000;   // flusher interval (long: makes 020's wait visible)
  int signal = SIGTERM;
};

// Start a stage, wait until record 2 is known to be mid-write (its BEGIN is
// in the file and its END is not), send one signal, wait for the exit.
Outcome signal_mid_record(const std::string& stage_name, RecordOptions opts = {});

// Same, then a second signal once the first has been acknowledged.
Outcome second_signal(const std::string& stage_name, long long record_ms = 4000);

// Runs a stage with --records 1 and sends SIGTERM as soon as it printed
// "record 1: end": while main is finishing on its own. One try; tests repeat.
Outcome signal_as_it_finishes(const std::string& stage_name);

// Runs `init -- 040-second-signal ...` (not as PID 1), waits until a record
// is mid-write and sends `sig` to the init's whole process group, as
// `kill -- -PGID` does.
Outcome group_signal_behind_init(const std::string& init, int sig = SIGTERM);

// Runs `init -- 040-second-signal ...` in a new session on a pseudo-terminal,
// waits until a record is mid-write and types Ctrl+C on the terminal.
Outcome ctrl_c_behind_init(const std::string& init);

// Hundreds of SIGTERM/SIGINT/SIGHUP in a burst while a record is mid-write.
Outcome signal_storm(const std::string& stage_name, int signals = 600);

// Runs `command` (a stage, possibly behind an init) as PID 1 of a new PID
// namespace, waits for the stage's ready line and sends SIGTERM to PID 1.
// `bound` is how long it may take to stop before it is SIGKILLed.
Outcome as_pid1(const std::vector<std::string>& command, milliseconds bound = milliseconds(3000));

// Why PID namespaces cannot be used here, or nullopt when they can.
std::optional<std::string> pid_namespaces_unavailable();

// Runs `command` as PID 1 with an orphan created next to it ("sleep" started
// by a subshell that exits), and reports whether the orphan was left as a
// zombie (true) or reaped (false) while PID 1 was still running.
bool orphan_left_as_zombie(const std::vector<std::string>& command, std::string* transcript);

}  // namespace ch01
