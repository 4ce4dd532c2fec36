// 01-signals tour: every stage through the same scenarios, measured now.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "scenarios.hpp"
#include "testkit/scoreboard.hpp"
#include "testkit/tour.hpp"

using namespace ch01;
using namespace testkit;

namespace {

std::string ms(long long v) { return std::to_string(v) + " ms"; }

// Progress on a terminal, and the stop on Ctrl-C/SIGTERM (testkit/tour.hpp).
testkit::TourRuntime* tour = nullptr;

std::vector<Cell> record_stage_row(const std::string& name) {
  const RecordOptions opts{};
  tour->stage(name);
  tour->scenario("SIGTERM in the middle of a record");
  auto mid = signal_mid_record(name, opts);
  bool graceful = mid.stopped_on_its_own && mid.status.ok();

  Cell stop_time = !mid.status.exited ? info(ms(mid.stop_ms) + " (killed)")
                   : verdict(mid.stop_ms < opts.record_ms + 1000, ms(mid.stop_ms));

  tour->scenario("a second SIGTERM after the first was taken");
  auto second = second_signal(name, 2000);
  Cell forced = !second.status.exited ? wrong("killed by the first")
                : second.status.code == 1 ? verdict(second.forced_ms < 1000, "exit 1 in " + ms(second.forced_ms))
                                          : wrong("ignored, " + second.status.str() + " after " + ms(second.forced_ms));

  tour->scenario("a storm of signals");
  auto storm = signal_storm(name);
  Cell storm_cell = verdict(storm.stopped_on_its_own && storm.status.exited, storm.status.str());

  Cell pid1 = skipped("no PID namespaces");
  if (!pid_namespaces_unavailable()) {
    tour->scenario("as PID 1 of a new PID namespace");
    auto o = as_pid1({stage(name), "--record-ms", "200", "--flush-ms", "100", "--out", "/dev/null"},
                     milliseconds(2000));
    pid1 = o.stopped_on_its_own ? verdict(o.status.ok(), o.status.str()) : wrong("ignores SIGTERM");
  }
  return {verdict(graceful, mid.status.str()), verdict(!mid.file.torn(), mid.file.torn() ? "torn" : "whole"),
          stop_time, forced, storm_cell, pid1};
}

std::vector<std::string> naive() {
  return {stage("010-naive-exit"), "--record-ms", "200", "--flush-ms", "100", "--out", "/dev/null"};
}

std::vector<std::string> behind(std::vector<std::string> init, const std::vector<std::string>& cmd) {
  init.insert(init.end(), cmd.begin(), cmd.end());
  return init;
}

std::vector<std::string> with_orphan(const std::vector<std::string>& cmd) {
  std::string sh = "(sleep 1 &); exec";
  for (auto& a : cmd) sh += " '" + a + "'";
  return {"sh", "-c", sh};
}

Cell pid1_stop(const std::vector<std::string>& cmd) {
  auto o = as_pid1(cmd, milliseconds(2000));
  if (!o.stopped_on_its_own) return wrong("ignores SIGTERM, SIGKILLed");
  return right(o.status.str());
}

// `init` (possibly empty) runs a shell that leaves an orphan, then execs `cmd`.
Cell reaps(const std::vector<std::string>& init, const std::vector<std::string>& cmd) {
  bool zombie = orphan_left_as_zombie(behind(init, with_orphan(cmd)), nullptr);
  return verdict(!zombie, zombie ? "zombie left" : "reaped");
}

// A signal to the init's group: did the child get it once (exit 0, whole)?
Cell once(const Outcome& o) {
  if (o.status.ok() && !o.file.torn()) return right("exit 0, whole");
  return wrong(o.status.str() + (o.file.torn() ? ", torn" : ""));
}

}  // namespace

// --show STAGE: one scenario in detail, for the chapter README.
int show(const std::string& name) {
  auto o = signal_mid_record(name);
  std::cout << "$ " << name << " --out <tmp>/records.txt --record-ms 500 --flush-ms 4000\n"
            << "  (SIGTERM sent once record 2 is mid-write)\n"
            << o.stdout_text << "[" << o.status.str() << ", " << o.stop_ms << " ms after SIGTERM]\n"
            << "$ tail -n 4 <tmp>/records.txt\n";
  std::vector<std::string> lines;
  std::istringstream in(o.records);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  for (std::size_t i = lines.size() > 4 ? lines.size() - 4 : 0; i < lines.size(); ++i) std::cout << lines[i] << "\n";
  std::cout << (o.file.torn() ? "=> torn: record " + std::to_string(o.file.begun) + " has no END\n"
                              : "=> whole: every BEGIN has its END\n");
  return 0;
}

int main(int argc, char** argv) {
  testkit::TourRuntime runtime("01-signals");
  tour = &runtime;
  if (argc == 3 && std::string(argv[1]) == "--show") return show(argv[2]);
  if (argc != 1) {
    std::cerr << "usage: 01-signals-tour [--show STAGE]\n";
    return 2;
  }
  try {
    Scoreboard records("01-signals: a record of 500 ms is being written when the signal arrives",
                       {"handles SIGTERM", "no torn record", "stop time", "2nd signal forces exit",
                        "signal storm", "as PID 1"});
    for (auto& name : kRecordStages) records.add_row(name, record_stage_row(name));
    records.add_note("stop time: SIGTERM -> exit; right when within the rest of the record (+1 s).");
    runtime.clear();
    std::cout << records.render() << "\n";

    Scoreboard pid1("01-signals: as PID 1 of a new PID namespace (a container's entrypoint)",
                    {"stops on SIGTERM", "reaps orphans"});
    if (auto why = pid_namespaces_unavailable()) {
      pid1.add_note("skipped: " + *why);
    } else {
      auto writer = [](const std::string& name) {
        return std::vector<std::string>{stage(name), "--record-ms", "200", "--flush-ms", "100", "--out", "/dev/null"};
      };
      tour->stage("as PID 1");
      tour->scenario("SIGTERM to PID 1, and an orphan to reap");
      pid1.add_row("010-naive-exit", {pid1_stop(naive()), reaps({}, naive())});
      pid1.add_row("040-second-signal", {pid1_stop(writer("040-second-signal")), reaps({}, writer("040-second-signal"))});
      auto init = std::vector<std::string>{stage("050-pid1-init"), "--"};
      pid1.add_row("050-pid1-init -- 010", {pid1_stop(behind(init, naive())), reaps(init, naive())});
      auto tini = std::vector<std::string>{TINI_PATH, "--"};
      pid1.add_row("tini -- 010", {pid1_stop(behind(tini, naive())), reaps(tini, naive())});
      pid1.add_note("reaps orphans: a subshell leaves a 'sleep' behind; is it reaped by PID 1 or left a zombie?");
    }
    runtime.clear();
    std::cout << pid1.render() << "\n";

    Scoreboard group("01-signals: 040-second-signal behind an init, one signal sent to the whole process group",
                     {"kill -- -PGID", "Ctrl+C on a terminal"});
    tour->stage("behind an init");
    tour->scenario("one signal to the whole process group");
    for (auto& [label, init] : {std::pair<std::string, std::string>{"050-pid1-init", stage("050-pid1-init")},
                                {"tini", TINI_PATH}})
      group.add_row(label, {once(group_signal_behind_init(init)), once(ctrl_c_behind_init(init))});
    group.add_note("right: the child got the signal once (exit 0, record whole), not also forwarded by the init.");
    runtime.clear();
    std::cout << group.render();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "01-signals tour failed: " << e.what() << "\n";
    return 1;
  }
}
