// 02-http-shutdown timelines: the seed 003 Redis counter experiment drawn
// from real runs. The same traffic goes to 010 and to 050: a POST /incr every
// 60 ms, each acknowledged at once while its Redis write lands 500 ms later,
// and SIGTERM in the middle. Every request is coloured by its outcome, with
// Redis as the judge (an acknowledged id missing from the set was lost); the
// events are the lines the stage already prints, as the test kit read them.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <thread>

#include "scenarios.hpp"
#include "testkit/timeline.hpp"
#include "testkit/tour.hpp"

using namespace ch02;
using namespace testkit;
using namespace std::chrono_literals;

namespace {

constexpr int kRequests = 34;
constexpr auto kInterval = 60ms, kSignalAt = 1000ms, kWork = 500ms;

TimelineLane run(const std::string& name) {
  RedisServer redis;
  std::vector<std::string> extra = {"--work-ms", std::to_string(kWork.count()), "--trace"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "400", "--shutdown-timeout-ms", "3000"});
  auto server = start(name, redis, extra);
  struct Sent {
    Clock::time_point start, end;
    Http http;
  };
  std::vector<Sent> sent(kRequests);
  std::vector<std::thread> clients;
  const auto t0 = Clock::now();
  for (int i = 0; i < kRequests; ++i)
    clients.emplace_back([&, i] {
      std::this_thread::sleep_until(t0 + i * kInterval);
      sent[i].start = Clock::now();
      sent[i].http = post(server.port, "/incr?id=t" + std::to_string(i), 3000ms);
      sent[i].end = Clock::now();
    });
  std::this_thread::sleep_until(t0 + kSignalAt);
  const auto signalled = server.process->send_signal(SIGTERM);
  const auto status = server.process->wait_exit(10s);
  for (auto& c : clients) c.join();
  const auto persisted = redis.client().smembers("incr:ids");

  // When each write landed: the stage's own trace line, as read.
  std::map<std::string, Clock::time_point> written;
  for (const auto& line : server.process->timed_lines())
    if (line.text.rfind("write: id=", 0) == 0 && line.text.find(" persisted") != std::string::npos)
      written[line.text.substr(10, line.text.find(' ', 10) - 10)] = line.at;

  TimelineLane lane{name, {}, {{0, "SIGTERM"}}};
  for (int i = 0; i < kRequests; ++i) {
    const auto& s = sent[i];
    const std::string id = "t" + std::to_string(i);
    Outcome o = s.http.status == 200 ? (persisted.count(id) ? Outcome::answered : Outcome::lost)
                : s.http.status != 0  ? Outcome::rejected
                : s.http.error == "refused" ? Outcome::refused
                                            : Outcome::failed;
    // A bar runs from the send to the write in Redis (to when it was due,
    // for a lost one); a request without a write ends at its answer.
    auto end = s.end;
    if (o == Outcome::answered && written.count(id)) end = written[id];
    if (o == Outcome::lost) end = s.end + kWork;
    lane.requests.push_back({ms_since(signalled, s.start), ms_since(signalled, end), o});
  }
  for (auto& e : events_from_output(*server.process, signalled,
                                    {{"readiness 503", "readiness 503"},
                                     {"listener closed", "listener closed"},
                                     {"redis connection closed", "Redis closed"}}))
    lane.events.push_back(e);
  lane.events.push_back({ms_since(signalled, status ? server.process->exit_time() : Clock::now()),
                         status ? status->str() : "still running"});
  if (!status) server.process->kill();
  return lane;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = timeline_out_dir(argc, argv);
  TourRuntime tour("02-http-shutdown timelines");
  Timeline t;
  t.title = "POST /incr every 60 ms; the 200 at once, the Redis write 500 ms later; SIGTERM at 0";
  t.x_label = "ms after SIGTERM (a bar: from the request to its write in Redis, or to its answer)";
  for (const std::string name : {"010-naive-exit", "050-drain-first"}) {
    tour.stage(name);
    tour.scenario("the Redis counter experiment");
    t.lanes.push_back(run(name));
  }
  tour.clear();
  render_timeline(t, dir + "/redis-counter.svg");
  std::printf("%s/redis-counter.svg\n", dir.c_str());
}
