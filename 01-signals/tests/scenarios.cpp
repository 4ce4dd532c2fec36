#include "scenarios.hpp"

#include <dirent.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

namespace ch01 {

using namespace std::chrono_literals;
using testkit::Clock;
using testkit::Failure;
using testkit::Process;
using testkit::scaled;

const std::vector<std::string> kRecordStages = {"010-naive-exit", "020-flag-in-handler", "030-signal-thread",
                                                "040-second-signal"};

std::string stage(const std::string& name) { return std::string(CHAPTER_BIN_DIR) + "/" + name; }

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
  // Stages without a signal thread print nothing when the signal arrives;
  // give the second signal right away then (they cannot tell them apart).
  if (stage_name != "010-naive-exit" && stage_name != "020-flag-in-handler") p.expect_line("shutdown:", 5s);
  auto second = p.send_signal(SIGTERM);
  Outcome o = finish(p, out, first, milliseconds(record_ms) + 5s);
  o.forced_ms = ms_between(second, p.exit_time());
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

struct ProcStat {
  char state = 0;
  pid_t ppid = 0;
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
  rest >> s.state >> s.ppid;
  return s;
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
