// 04-worker-loop timelines, drawn from real runs of the stages:
//   stop-latency.svg   SIGTERM while a job runs (busy) and while the queue is
//                      empty (idle): 010 is killed mid-job, 020 notices the
//                      flag only after its sleep, 030 stops within one job.
//   kill-recovery.svg  kill -9 mid-job, then a restart: 030 took the job off
//                      the queue and it is gone; 040 finds it in its
//                      processing list, requeues it and runs it again.
// Jobs are bars from their "start" line to their "done" line; the events are
// the lines each stage already prints, as the test kit read them.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "scenarios.hpp"
#include "testkit/timeline.hpp"
#include "testkit/tour.hpp"

using namespace worker_loop;
using namespace testkit;
using namespace std::chrono_literals;

namespace {

Settings settings() {
  Settings cfg;
  cfg.step = 200ms;
  cfg.interval = 1500ms;
  cfg.block = 500ms;
  cfg.budget = 3000ms;
  return cfg;
}

// One bar per run of a job: "job ID: start" to "job ID: done", or to `cut`
// (the moment the process died) with `unfinished` as the outcome.
void add_jobs(TimelineLane& lane, const Process& p, Clock::time_point zero, Clock::time_point cut, Outcome unfinished) {
  std::map<std::string, Clock::time_point> open;
  for (const auto& line : p.timed_lines()) {
    if (line.text.rfind("job ", 0) != 0) continue;
    const std::string id = line.text.substr(4, line.text.find(':') - 4);
    if (line.text.find(": start") != std::string::npos) open[id] = line.at;
    if (line.text.find(": done") != std::string::npos && open.count(id)) {
      lane.requests.push_back({ms_since(zero, open[id]), ms_since(zero, line.at), Outcome::answered});
      open.erase(id);
    }
  }
  for (const auto& [id, at] : open) lane.requests.push_back({ms_since(zero, at), ms_since(zero, cut), unfinished});
}

void add_exit(TimelineLane& lane, Process& p, Clock::time_point zero) {
  const auto status = p.wait_exit(scaled(10s));
  if (!status) p.kill();
  lane.events.push_back({ms_since(zero, status ? p.exit_time() : Clock::now()), status ? status->str() : "still running"});
}

const std::vector<LinePattern> kStopLines = {{"noticed after the sleep", "flag seen"},
                                             {"received, stopping", "signal taken"},
                                             {"handed back", "job handed back"}};

TimelineLane stop(const std::string& name, bool busy) {
  RedisServer redis;
  const Stage& s = stage(name);
  auto cfg = settings();
  if (busy) push_jobs(redis.client(), cfg.queue, "j", 2, 4);
  auto p = start(s, redis, cfg);
  p->expect_line(busy ? "job j1: step 1/4" : "idle: queue empty", scaled(10s));
  const auto zero = p->send_signal(SIGTERM);
  TimelineLane lane{name.substr(0, 3) + (busy ? "/busy" : "/idle"), {}, {{0, "SIGTERM"}}};
  add_exit(lane, *p, zero);
  add_jobs(lane, *p, zero, p->exit_time(), Outcome::lost);
  for (auto& e : events_from_output(*p, zero, kStopLines)) lane.events.push_back(e);
  return lane;
}

TimelineLane kill_and_restart(const std::string& name) {
  RedisServer redis;
  const Stage& s = stage(name);
  auto cfg = settings();
  push_jobs(redis.client(), cfg.queue, "j", 1, 4);
  auto first = start(s, redis, cfg);
  first->expect_line("job j1: step 1/4", scaled(10s));
  const auto zero = first->send_signal(SIGKILL);
  first->wait_exit(scaled(10s));
  TimelineLane lane{name, {}, {{0, "kill -9"}}};
  const auto restarted = Clock::now();
  auto second = start(s, redis, cfg);
  lane.events.push_back({ms_since(zero, restarted), "restart"});
  second->wait_for_line("idle: queue empty", scaled(10s));
  const bool recovered = second->out().find("job j1: done") != std::string::npos;
  // The killed run: lost for good, or interrupted and run again.
  add_jobs(lane, *first, zero, first->exit_time(), recovered ? Outcome::failed : Outcome::lost);
  add_jobs(lane, *second, zero, Clock::now(), Outcome::lost);
  for (auto& e : events_from_output(*second, zero, {{"recovered:", "requeued"}, {"idle: queue empty", "queue empty"}}))
    lane.events.push_back(e);
  second->send_signal(SIGTERM);
  second->wait_exit(scaled(10s));
  return lane;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = timeline_out_dir(argc, argv);
  TourRuntime tour("04-worker-loop timelines");
  Timeline latency;
  latency.title = "SIGTERM while a job of 4 x 200 ms steps runs (busy), and while the queue is empty (idle)";
  latency.x_label = "ms after SIGTERM (a bar: one job, from its start to its last step)";
  for (const std::string name : {"010-naive-loop", "020-flag-around-sleep", "030-interruptible-wait"})
    for (bool busy : {true, false}) {
      if (!busy && name == "010-naive-loop") continue;
      tour.stage(name);
      tour.scenario(busy ? "SIGTERM mid-job" : "SIGTERM while idle");
      latency.lanes.push_back(stop(name, busy));
    }
  Timeline kill;
  kill.title = "kill -9 in the middle of a job, then a restart";
  kill.x_label = "ms after kill -9 (a bar: one run of a job)";
  for (const std::string name : {"030-interruptible-wait", "040-reliable-queue"}) {
    tour.stage(name);
    tour.scenario("kill -9 mid-job, then a restart");
    kill.lanes.push_back(kill_and_restart(name));
  }
  tour.clear();
  render_timeline(latency, dir + "/stop-latency.svg");
  render_timeline(kill, dir + "/kill-recovery.svg");
  std::printf("%s/stop-latency.svg\n%s/kill-recovery.svg\n", dir.c_str(), dir.c_str());
}
