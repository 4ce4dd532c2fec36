#include "scenarios.hpp"
#include "testkit/stage.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

namespace ch01 {

using namespace std::chrono_literals;
using testkit::Clock;
using testkit::Failure;
using testkit::Process;
using testkit::scaled;

const std::vector<std::string> kRecordStages = {"010-naive-exit",           "020-flag-in-handler",
                                                "030-signal-thread",        "033-interruptible-flusher",
                                                "036-ignore-sighup",        "040-second-signal"};
const std::vector<std::string> kSignalThreadStages = {"030-signal-thread", "033-interruptible-flusher",
                                                      "036-ignore-sighup", "040-second-signal"};

std::string stage(const std::string& name) { return testkit::stage_binary(CHAPTER_BIN_DIR, name); }

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "ch01-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw Failure("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

RecordFile RecordFile::read(const std::string& path) {
  RecordFile f;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("BEGIN ", 0) == 0) ++f.begun;
    if (line.rfind("END ", 0) == 0) ++f.ended;
  }
  return f;
}

namespace {

long long ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> record_writer(const std::string& name, const std::string& out, long long record_ms,
                                       long long flush_ms) {
  return {stage(name), "--out", out, "--record-ms", std::to_string(record_ms), "--flush-ms",
          std::to_string(flush_ms)};
}

// Waits until record N is really mid-write: its BEGIN and its second line of
// payload are in the file and its END is not. Whatever happens next, a
// signal sent now arrives in the middle of record N.
void wait_mid_record(Process& p, const std::string& out, int n) {
  p.expect_line("record " + std::to_string(n) + ": begin", 10s);
  const std::string second_line = "  line 2/5 of record " + std::to_string(n) + "\n";
  auto deadline = Clock::now() + scaled(10s);
  while (slurp(out).find(second_line) == std::string::npos) {
    if (Clock::now() > deadline) throw Failure("record " + std::to_string(n) + " never got going\n" + p.transcript());
    std::this_thread::sleep_for(2ms);  // polling the file for a condition
  }
  if (slurp(out).find("END " + std::to_string(n) + "\n") != std::string::npos)
    throw Failure("precondition failed: record " + std::to_string(n) +
                  " already ended before the signal could be sent (machine too slow for --record-ms?)\n" +
                  p.transcript());
}

// The signal masks of /proc/PID/status ("SigPnd:", "ShdPnd:") of the process
// and all its threads, or nullopt once the process is gone.
std::optional<unsigned long long> pending_signals(pid_t pid) {
  unsigned long long pending = 0;
  bool found = false;
  auto add = [&](const std::string& status_path) {
    std::ifstream in(status_path);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("SigPnd:", 0) == 0 || line.rfind("ShdPnd:", 0) == 0) {
        pending |= std::stoull(line.substr(7), nullptr, 16);
        found = true;
      }
    }
  };
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec))
    add(task.path().string() + "/status");
  if (!found) return std::nullopt;
  return pending;
}

// Waits until `sig`, sent to `p`, is no longer pending: a handler has taken
// it (or sigwaitinfo, or the default action). For stages that print nothing
// when a signal arrives; bounded.
void wait_signal_taken(Process& p, int sig) {
  auto deadline = Clock::now() + scaled(5s);
  for (;;) {
    auto pending = pending_signals(p.pid());
    if (!pending || !(*pending & (1ULL << (sig - 1)))) return;
    if (Clock::now() > deadline) throw Failure(testkit::signal_name(sig) + " never taken\n" + p.transcript());
    std::this_thread::sleep_for(1ms);  // polling /proc for a condition
  }
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (std::size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
  return s;
}

Outcome finish(Process& p, const std::string& out, Clock::time_point signalled, milliseconds bound) {
  Outcome o;
  if (auto st = p.wait_exit(bound)) {
    o.status = *st;
  } else {
    o.stopped_on_its_own = false;
    o.status = p.kill();
  }
  o.stop_ms = ms_between(signalled, p.exit_time());
  o.file = RecordFile::read(out);
  o.records = slurp(out);
  o.stdout_text = replace_all(p.out(), std::filesystem::path(out).parent_path().string(), "<tmp>");
  o.transcript = p.transcript();
  return o;
}

}  // namespace

struct ProcStat {
  char state = 0;
  pid_t ppid = 0;
  pid_t pgrp = 0;
  std::string comm;
};

std::optional<ProcStat> proc_stat(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  auto open = stat.find('('), close = stat.rfind(')');
  if (open == std::string::npos || close == std::string::npos) return std::nullopt;
  ProcStat s;
  s.comm = stat.substr(open + 1, close - open - 1);
  std::istringstream rest(stat.substr(close + 2));
  rest >> s.state >> s.ppid >> s.pgrp;
  return s;
}

Outcome signal_mid_record(const std::string& stage_name, RecordOptions opts) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  Process p(record_writer(stage_name, out, opts.record_ms, opts.flush_ms));
  p.expect_line("ready", 10s);
  wait_mid_record(p, out, 2);
  auto sent = p.send_signal(opts.signal);
  return finish(p, out, sent, milliseconds(opts.record_ms + opts.flush_ms) + 5s);
}

Outcome second_signal(const std::string& stage_name, long long record_ms) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  Process p(record_writer(stage_name, out, record_ms, 100));
  p.expect_line("ready", 10s);
  wait_mid_record(p, out, 1);
  auto first = p.send_signal(SIGTERM);
  // The second signal goes only once the first is known to be taken; sent
  // back to back, the two would merge into one pending signal. Stages with
  // a signal thread say so; 020's handler prints nothing, so watch the
  // pending mask clear. (010 dies of the first; nothing to wait for.)
  if (stage_name == "020-flag-in-handler")
    wait_signal_taken(p, SIGTERM);
  else if (stage_name != "010-naive-exit")
    p.expect_line("shutdown:", 5s);
  if (stage_name != "010-naive-exit" && slurp(out).find("END 1\n") != std::string::npos)
    throw Failure("precondition failed: record 1 ended before the second signal could be sent\n" + p.transcript());
  auto second = p.send_signal(SIGTERM);
  Outcome o = finish(p, out, first, milliseconds(record_ms) + 5s);
  o.forced_ms = ms_between(second, p.exit_time());
  return o;
}

Outcome signal_as_it_finishes(const std::string& stage_name) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  Process p({stage(stage_name), "--records", "1", "--record-ms", "5", "--flush-ms", "5", "--out", out});
  p.expect_line("ready", 10s);
  p.expect_line("record 1: end", 10s);
  auto sent = p.send_signal(SIGTERM);  // main is past its last record, finishing
  return finish(p, out, sent, 10s);
}

Outcome group_signal_behind_init(const std::string& init, int sig) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  // testkit starts every process as the leader of a new process group, so
  // the init's group is {init, and whatever it leaves in its group}.
  Process p({init, "--", stage("040-second-signal"), "--out", out, "--record-ms", "2000", "--flush-ms", "100"});
  auto ready = p.expect_match(std::regex("ready pid=([0-9]+)"), 10s);
  const pid_t child = std::stoi(ready[1]);
  wait_mid_record(p, out, 1);
  auto st = proc_stat(child);
  if (!st) throw Failure("the child is gone before the signal\n" + p.transcript());
  auto sent = Clock::now();
  if (::kill(-p.pid(), sig) != 0) throw Failure("kill(-pgid) failed\n" + p.transcript());
  Outcome o = finish(p, out, sent, 10s);
  o.child_own_group = st->pgrp == child;
  return o;
}

Outcome ctrl_c_behind_init(const std::string& init) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) throw Failure("cannot allocate a pty");
  std::unique_ptr<int, void (*)(int*)> close_master(&master, [](int* fd) { ::close(*fd); });
  const std::string slave = ::ptsname(master);
  // A new session whose controlling terminal is the pty, like a login shell
  // running `init -- 040` in the foreground: sh puts the pty on stdin,
  // setsid -c makes it the controlling terminal of a new session (whose
  // foreground group is the init's), -w waits and passes the status on.
  Process p({"sh", "-c", "exec setsid -w -c \"$@\" < " + slave, "sh", init, "--", stage("040-second-signal"),
             "--out", out, "--record-ms", "2000", "--flush-ms", "100"});
  auto ready = p.expect_match(std::regex("ready pid=([0-9]+)"), 10s);
  const pid_t child = std::stoi(ready[1]);
  wait_mid_record(p, out, 1);
  auto st = proc_stat(child);
  if (!st) throw Failure("the child is gone before Ctrl+C\n" + p.transcript());
  const pid_t foreground = ::tcgetpgrp(master);
  auto sent = Clock::now();
  // The terminal's line discipline turns ^C into SIGINT for its foreground
  // process group.
  if (::write(master, "\x03", 1) != 1) throw Failure("cannot type ^C\n" + p.transcript());
  Outcome o = finish(p, out, sent, 10s);
  o.child_own_group = st->pgrp == child;
  o.child_has_foreground = foreground == child;
  o.transcript += "foreground process group of the terminal: " + std::to_string(foreground) + "\n";
  return o;
}

Outcome signal_storm(const std::string& stage_name, int signals) {
  TempDir dir;
  std::string out = dir.file("records.txt");
  Process p(record_writer(stage_name, out, 500, 100));
  p.expect_line("ready", 10s);
  wait_mid_record(p, out, 1);
  const int kinds[] = {SIGTERM, SIGINT, SIGHUP};
  auto first = Clock::now();
  for (int i = 0; i < signals; ++i) {
    if (::kill(p.pid(), kinds[i % 3]) != 0) break;  // it may be gone already
  }
  return finish(p, out, first, 10s);
}

std::optional<std::string> pid_namespaces_unavailable() {
  static const std::optional<std::string> reason = []() -> std::optional<std::string> {
    try {
      Process probe({UNSHARE_PATH, "--pid", "--fork", "--mount-proc", "true"});
      auto st = probe.expect_exit(10s);
      if (st.ok()) return std::nullopt;
      return "unshare --pid --fork --mount-proc failed (" + st.str() + "): " + probe.err();
    } catch (const Failure& f) {
      return std::string("cannot run unshare: ") + f.what();
    }
  }();
  return reason;
}

namespace {

// The host pid of PID 1 in the namespace: the child that unshare forked.
pid_t namespace_init(Process& unshare) {
  std::string path = "/proc/" + std::to_string(unshare.pid()) + "/task/" + std::to_string(unshare.pid()) + "/children";
  auto deadline = Clock::now() + scaled(5s);
  while (Clock::now() < deadline) {
    std::ifstream in(path);
    pid_t pid = 0;
    if (in >> pid && pid > 0) return pid;
    std::this_thread::yield();
  }
  throw Failure("unshare has no child\n" + unshare.transcript());
}

std::vector<std::string> in_pid_namespace(const std::vector<std::string>& command) {
  std::vector<std::string> argv = {UNSHARE_PATH, "--pid", "--fork", "--mount-proc"};
  argv.insert(argv.end(), command.begin(), command.end());
  return argv;
}

// A child of `parent` running `comm`, if any.
std::optional<pid_t> find_child(pid_t parent, const std::string& comm) {
  std::unique_ptr<DIR, int (*)(DIR*)> proc(::opendir("/proc"), ::closedir);
  if (!proc) return std::nullopt;
  while (dirent* e = ::readdir(proc.get())) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    pid_t pid = std::atoi(e->d_name);
    if (auto s = proc_stat(pid); s && s->ppid == parent && s->comm == comm) return pid;
  }
  return std::nullopt;
}

}  // namespace

Outcome as_pid1(const std::vector<std::string>& command, milliseconds bound) {
  Process p(in_pid_namespace(command));
  Outcome o;
  o.ready_line = p.expect_line("ready pid=", 10s);
  pid_t init = namespace_init(p);
  auto sent = Clock::now();
  if (::kill(init, SIGTERM) != 0) throw Failure("cannot signal PID 1\n" + p.transcript());
  if (auto st = p.wait_exit(bound)) {
    o.status = *st;
  } else {
    o.stopped_on_its_own = false;
    o.status = p.kill();
  }
  o.stop_ms = ms_between(sent, p.exit_time());
  o.transcript = p.transcript();
  return o;
}

bool orphan_left_as_zombie(const std::vector<std::string>& command, std::string* transcript) {
  Process p(in_pid_namespace(command));
  p.expect_line("ready pid=", 10s);
  pid_t init = namespace_init(p);
  auto fail = [&](const std::string& why) { return Failure(why + "\n" + p.transcript()); };

  // The orphan ("sleep 1", left by a subshell that exited) now has PID 1 as
  // its parent. When it exits it is either reaped by PID 1 (its /proc entry
  // disappears) or stays a zombie: state Z, for as long as PID 1 lives.
  // Polling here waits for a condition, bounded; it never assumes a timing.
  auto deadline = Clock::now() + scaled(5s);
  std::optional<pid_t> orphan;
  while (!(orphan = find_child(init, "sleep"))) {
    if (Clock::now() > deadline) throw fail("no orphaned 'sleep' found under PID 1");
    std::this_thread::sleep_for(5ms);
  }
  deadline = Clock::now() + scaled(10s);
  std::optional<bool> zombie;
  while (!zombie) {
    auto st = proc_stat(*orphan);
    if (!st || st->ppid != init) {
      zombie = false;  // reaped
    } else if (st->state == 'Z') {
      // A zombie for an instant is normal (exit, then the parent reaps it);
      // one that is still there a second later has nobody to reap it.
      auto grace = Clock::now() + scaled(1s);
      while (Clock::now() < grace && proc_stat(*orphan)) std::this_thread::sleep_for(10ms);
      auto again = proc_stat(*orphan);
      zombie = again && again->state == 'Z' && again->ppid == init;
    } else if (Clock::now() > deadline) {
      throw fail("the orphan neither exited nor was reaped");
    } else {
      std::this_thread::sleep_for(10ms);
    }
  }
  p.kill();
  if (transcript) *transcript = p.transcript();
  return *zombie;
}

}  // namespace ch01
