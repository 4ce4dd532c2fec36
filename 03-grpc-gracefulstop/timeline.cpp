// 03-grpc-gracefulstop timelines, drawn from real runs of the stages:
//   stream-deadline.svg  one Ticks stream held open and a Work RPC every
//                        100 ms, SIGTERM at 0: 020's Shutdown() waits for the
//                        stream forever (SIGKILLed here after 3 s), 030 cuts
//                        it at its deadline, the last stage drains first.
//   rolling-restart.svg  two servers behind one round-robin channel (health
//                        checks, no retries), each in turn stopped with
//                        SIGTERM and restarted on its port: every Work RPC
//                        coloured by its outcome.
// The events are the lines each stage already prints, as the test kit read
// them, plus the signals and exits the harness saw.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "scenarios.hpp"
#include "testkit/redis.hpp"
#include "testkit/timeline.hpp"
#include "testkit/tour.hpp"

using namespace grpcstop;
using namespace testkit;
using namespace std::chrono_literals;

namespace {

std::string binary_path(const std::string& name) { return std::string(CHAPTER_BIN_DIR) + "/" + name; }

Outcome outcome(const RpcResult& r, const std::set<std::string>& persisted) {
  if (r.ok()) return persisted.count(r.id) ? Outcome::answered : Outcome::lost;
  if (r.code == grpc::StatusCode::UNAVAILABLE && r.message.find("connect") != std::string::npos)
    return Outcome::refused;
  return Outcome::failed;
}

const std::vector<LinePattern> kStopLines = {{"received", "signal taken"},
                                             {"NOT_SERVING", "NOT_SERVING"},
                                             {"drain over", "drain over"},
                                             {"cancelled:", "stream cancelled"}};

// The exit, or SIGKILL at `bound` for a stage that never exits by itself.
void add_exit(TimelineLane& lane, Process& p, Clock::time_point zero, milliseconds bound) {
  if (const auto status = p.wait_exit(bound)) {
    lane.events.push_back({ms_since(zero, p.exit_time()), status->str()});
    return;
  }
  const auto killed = Clock::now();
  p.kill();
  lane.events.push_back({ms_since(zero, killed), "still running: SIGKILL"});
}

TimelineLane open_stream(const Stage& s) {
  RedisServer redis;
  Server server(binary_path(s.name), redis.address(), s.args);
  auto channel = channel_to({server.target()});
  struct Call {
    RpcResult r;
    Clock::time_point start;
  };
  std::vector<Call> calls(10);
  const auto opened = Clock::now();
  TickStream stream(channel, "stream-1");
  if (!stream.wait_ticks(3, scaled(10s))) throw Failure("the stream did not tick");
  const auto t0 = Clock::now();
  std::vector<std::thread> clients;
  for (std::size_t i = 0; i < calls.size(); ++i)
    clients.emplace_back([&, i] {
      std::this_thread::sleep_until(t0 + i * 100ms);
      calls[i].start = Clock::now();
      calls[i].r = work(*channel, "rpc-" + std::to_string(i), 300, 5s);
    });
  std::this_thread::sleep_until(t0 + 500ms);
  const auto zero = server.process().send_signal(SIGTERM);
  TimelineLane lane{s.name, {}, {{0, "SIGTERM"}}};
  std::thread watcher([&] { stream.wait_finished(20s); });
  // A stage with a budget exits within it (plus gRPC's teardown); one
  // without waits for the stream forever and is SIGKILLed at 3 s.
  add_exit(lane, server.process(), zero, s.budget ? *s.budget + scaled(2000ms) : milliseconds(3000));
  watcher.join();
  const auto stream_end = Clock::now();
  for (auto& c : clients) c.join();
  std::set<std::string> persisted;
  for (auto& id : redis.client().smembers("work:done")) persisted.insert(id);
  for (const auto& c : calls) lane.requests.push_back({ms_since(zero, c.start), ms_since(zero, c.r.done), outcome(c.r, persisted)});
  // The stream: answered if it ended with OK, failed if it was cut.
  lane.requests.push_back({ms_since(zero, opened), ms_since(zero, stream_end),
                           stream.status().ok() ? Outcome::answered : Outcome::failed});
  for (auto& e : events_from_output(server.process(), zero, kStopLines)) lane.events.push_back(e);
  return lane;
}

TimelineLane rolling(const Stage& s) {
  RedisServer redis;
  std::vector<std::unique_ptr<Server>> servers;
  for (int i = 0; i < 2; ++i) servers.push_back(std::make_unique<Server>(binary_path(s.name), redis.address(), s.args));
  auto channel = channel_to({servers[0]->target(), servers[1]->target()}, kNoRetryServiceConfig);
  LoadOptions opts;
  opts.rpcs = 400;
  opts.rate = 25;
  opts.work_ms = 200;
  Load load(channel, opts);
  for (auto& server : servers) server->process().expect_line("work: started", scaled(10s));
  TimelineLane lane{s.name, {}, {}};
  Clock::time_point zero{};
  int n = 0;
  for (auto& server : servers) {
    ++n;
    server->process().expect_line("work: started", scaled(10s));
    const auto at = server->process().send_signal(SIGTERM);
    if (n == 1) zero = at;
    lane.events.push_back({ms_since(zero, at), "SIGTERM " + std::to_string(n)});
    add_exit(lane, server->process(), zero, scaled(10s));
    const int port = server->port();
    server = std::make_unique<Server>(binary_path(s.name), redis.address(), s.args, port);
    lane.events.push_back({ms_since(zero, Clock::now()), "ready " + std::to_string(n)});
    server->process().expect_line("work: started", scaled(10s));
  }
  std::this_thread::sleep_for(300ms);  // a little traffic after the last restart
  load.hold_back();
  const auto result = load.wait();
  std::set<std::string> persisted;
  for (auto& id : redis.client().smembers("work:done")) persisted.insert(id);
  for (const auto& r : result.rpcs)
    if (r.sent >= zero - 800ms) lane.requests.push_back({ms_since(zero, r.sent), ms_since(zero, r.done), outcome(r, persisted)});
  return lane;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = timeline_out_dir(argc, argv);
  TourRuntime tour("03-grpc-gracefulstop timelines");
  Timeline streams;
  streams.title = "An open Ticks stream and a Work RPC (300 ms) every 100 ms; SIGTERM at 0";
  streams.x_label = "ms after SIGTERM (a bar: one call; the longest one is the stream)";
  for (const char* prefix : {"020", "030", "050"}) {
    const Stage& s = stage(prefix);
    tour.stage(s.name);
    tour.scenario("SIGTERM with an open stream");
    streams.lanes.push_back(open_stream(s));
  }
  Timeline roll;
  roll.title = "Rolling restart of two servers, Work RPCs (200 ms) at 25/s, health checks, no retries";
  roll.x_label = "ms after the first SIGTERM (a bar: one RPC)";
  for (const char* prefix : {"010", "050"}) {
    const Stage& s = stage(prefix);
    tour.stage(s.name);
    tour.scenario("rolling restart");
    roll.lanes.push_back(rolling(s));
  }
  tour.clear();
  render_timeline(streams, dir + "/stream-deadline.svg");
  render_timeline(roll, dir + "/rolling-restart.svg");
  std::printf("%s/stream-deadline.svg\n%s/rolling-restart.svg\n", dir.c_str(), dir.c_str());
}
