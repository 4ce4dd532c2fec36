#include "scenarios.hpp"
#include "testkit/stage.hpp"

#include <algorithm>
#include <random>
#include <thread>
#include <stdexcept>

#ifndef CHAPTER_BIN_DIR
#error "CHAPTER_BIN_DIR must name the directory of the stage binaries"
#endif

namespace worker_loop {

using testkit::Process;
using testkit::RedisServer;

const std::vector<Stage>& stages() {
  static const std::vector<Stage> all = {
      {"010-naive-loop", false, false, false, false, false},
      {"020-flag-around-sleep", true, false, false, false, false},
      {"025-stop-token", true, false, false, false, false},
      {"030-interruptible-wait", true, true, false, false, false},
      {"033-processing-list", true, true, true, false, false},
      {"035-bad-deliveries", true, true, true, false, false},
      {"040-reliable-queue", true, true, true, false, false},
      {"043-named-list", true, true, true, false, false, false, false, false, true},
      {"045-worker-pool", true, true, true, true, false},
      {"050-worker-pool", true, true, true, true, false},
      {"060-leased-names", true, true, true, true, true},
      {"070-attempt-cap", true, true, true, true, true, true},
      {"080-claim-key", true, true, true, true, true, true},
      {"090-hand-back", true, true, true, true, true, true},
      {"100-unblock-idle", true, true, true, true, true, true},
      {"105-expire-keys", true, true, true, true, true, true, false, true},
      {"110-streams", true, true, true, true, false, true, true},
  };
  return all;
}

const Stage& stage(std::string_view name) {
  for (auto& s : stages())
    if (s.name == name) return s;
  throw std::invalid_argument("no stage " + std::string(name));
}

std::string binary(const Stage& s) { return testkit::stage_binary(CHAPTER_BIN_DIR, s.name); }

std::vector<std::string> command_line(const Stage& s, const RedisServer& redis, const Settings& cfg) {
  std::vector<std::string> argv = {binary(s),    "--redis",   redis.address(), "--queue",
                                   cfg.queue,    "--step-ms", std::to_string(cfg.step.count())};
  if (s.reliable) {
    argv.insert(argv.end(), {"--block-ms", std::to_string(cfg.block.count())});
  } else {
    argv.insert(argv.end(), {"--interval", std::to_string(cfg.interval.count())});
  }
  if (s.budget) argv.insert(argv.end(), {"--budget-ms", std::to_string(cfg.budget.count())});
  if (s.pool) argv.insert(argv.end(), {"--workers", std::to_string(cfg.workers)});
  if ((s.pool || s.named) && !cfg.name.empty()) argv.insert(argv.end(), {"--name", cfg.name});
  if (s.lease) argv.insert(argv.end(), {"--lease-ms", std::to_string(cfg.lease.count())});
  if (s.streams) argv.insert(argv.end(), {"--min-idle-ms", std::to_string(cfg.lease.count())});
  if (s.cap) argv.insert(argv.end(), {"--max-attempts", std::to_string(cfg.max_attempts)});
  return argv;
}

std::unique_ptr<Process> start(const Stage& s, const RedisServer& redis, const Settings& cfg) {
  auto p = std::make_unique<Process>(command_line(s, redis, cfg));
  p->expect_line("ready", milliseconds(10000));
  return p;
}

std::string payload(const std::string& id, int steps) { return "id=" + id + " steps=" + std::to_string(steps); }

void produce(testkit::RedisClient& redis, const std::string& queue, const std::string& p, bool stream) {
  if (stream)
    redis.command({"XADD", queue, "*", "payload", p});
  else
    redis.command({"RPUSH", queue, p});
}

std::vector<std::string> push_jobs(testkit::RedisClient& redis, const std::string& queue, const std::string& prefix,
                                   int count, int steps, bool stream) {
  std::vector<std::string> ids;
  for (int i = 1; i <= count; ++i) {
    ids.push_back(prefix + std::to_string(i));
    produce(redis, queue, payload(ids.back(), steps), stream);
  }
  return ids;
}

std::vector<std::string> waiting_payloads(testkit::RedisClient& redis, const std::string& queue) {
  if (redis.command({"TYPE", queue}) == "stream") {
    std::vector<std::string> all;
    for (auto& e : redis.array({"XRANGE", queue, "-", "+"})) all.push_back(e.substr(e.rfind('\n') + 1));
    return all;
  }
  std::vector<std::string> lists = {queue};
  for (auto& key : redis.array({"KEYS", queue + ":processing*"})) lists.push_back(key);
  std::sort(lists.begin() + 1, lists.end());
  std::vector<std::string> all;
  for (auto& list : lists)
    for (auto& p : redis.array({"LRANGE", list, "0", "-1"})) all.push_back(p);
  return all;
}

JobState job_state(testkit::RedisClient& redis, const std::string& queue, const std::string& id) {
  JobState st;
  st.steps_written = redis.integer({"HLEN", queue + ":steps:" + id});
  // Up to 100 a hash and a set for the whole queue; from 105 one key per job.
  std::string attempts = redis.command({"HGET", queue + ":attempts", id});
  if (attempts == "(nil)") attempts = redis.command({"GET", queue + ":attempts:" + id});
  st.attempts = attempts == "(nil)" ? 0 : std::stoll(attempts);
  st.done = redis.integer({"SISMEMBER", queue + ":done", id}) == 1 ||
            redis.integer({"EXISTS", queue + ":done:" + id}) == 1;
  for (auto& p : waiting_payloads(redis, queue))
    if (p.rfind("id=" + id + " ", 0) == 0) st.waiting = true;
  return st;
}

std::set<std::string> done_ids(testkit::RedisClient& redis, const std::string& queue,
                               const std::vector<std::string>& ids) {
  std::set<std::string> done = redis.smembers(queue + ":done");
  for (std::size_t i = 0; i < ids.size(); i += 500) {  // from 105: one key per job
    std::vector<std::string> mget = {"MGET"};
    for (std::size_t j = i; j < std::min(ids.size(), i + 500); ++j) mget.push_back(queue + ":done:" + ids[j]);
    auto got = redis.array(mget);
    for (std::size_t j = 0; j < got.size(); ++j)
      if (got[j] != "(nil)") done.insert(ids[i + j]);
  }
  return done;
}

std::map<std::string, long long> attempt_counts(testkit::RedisClient& redis, const std::string& queue,
                                                const std::vector<std::string>& ids) {
  std::map<std::string, long long> runs;
  auto flat = redis.array({"HGETALL", queue + ":attempts"});
  for (std::size_t i = 0; i + 1 < flat.size(); i += 2) runs[flat[i]] = std::stoll(flat[i + 1]);
  for (std::size_t i = 0; i < ids.size(); i += 500) {
    std::vector<std::string> mget = {"MGET"};
    for (std::size_t j = i; j < std::min(ids.size(), i + 500); ++j) mget.push_back(queue + ":attempts:" + ids[j]);
    auto got = redis.array(mget);
    for (std::size_t j = 0; j < got.size(); ++j)
      if (got[j] != "(nil)") runs[ids[i + j]] = std::stoll(got[j]);
  }
  return runs;
}

std::string JobState::str(int steps) const {
  if (done) return "done";
  std::string s = steps_written == 0 ? "not started" : "half done (" + std::to_string(steps_written) + "/" +
                                                           std::to_string(steps) + " steps)";
  return s + (waiting ? ", still queued" : ", gone from the queue");
}

std::string Stopped::status_text() const { return status ? status->str() : "still running"; }

namespace {

// Waits for the exit (bounded), fills in what a Stopped reports, and kills
// the process if it is still running at the bound.
void finish(Process& p, testkit::Clock::time_point sent, milliseconds bound, Stopped& r) {
  r.status = p.wait_exit(bound);
  if (r.status) {
    r.latency_ms = std::chrono::duration_cast<milliseconds>(p.exit_time() - sent).count();
  } else {
    p.kill();
  }
  r.out = p.out();
  r.err = p.err();
  r.transcript = p.transcript();
}

}  // namespace

int workers(const Stage& s, const Settings& cfg) { return s.pool ? cfg.workers : 1; }

bool MidJob::nothing_lost() const {
  for (auto& st : running_after)
    if (!st.done || st.steps_written != steps || st.waiting) return false;
  return behind_started == 0 && behind_waiting == static_cast<int>(behind.size());
}

std::string MidJob::summary() const {
  bool all_done = true;
  for (auto& st : running_after) all_done = all_done && st.done;
  if (all_done)
    return join(running) + " done, " + std::to_string(behind_waiting) + " of " + std::to_string(behind.size()) +
           " queued";
  std::string out;
  for (std::size_t i = 0; i < running.size(); ++i)
    if (!running_after[i].done) out += (out.empty() ? "" : "; ") + running[i] + " " + running_after[i].str(steps);
  return out;
}

namespace {

// Starts the stage on `count` queued jobs and returns once each worker is
// at step 1 of its first job; `running` gets those jobs.
std::unique_ptr<Process> start_busy(RedisServer& redis, const Stage& s, const Settings& cfg,
                                    std::vector<std::string>& ids, std::vector<std::string>& running) {
  int n = workers(s, cfg);
  ids = push_jobs(redis.client(), cfg.queue, "j", n + 2, 4, s.streams);
  auto p = start(s, redis, cfg);
  // FIFO: the first n jobs go to the n workers, in whatever order they grab them.
  running.assign(ids.begin(), ids.begin() + n);
  for (int i = 0; i < n; ++i)
    p->expect_line(": step 1/", milliseconds(10000));  // "job jN: step 1/4"
  return p;
}

}  // namespace

MidJob stop_mid_job(RedisServer& redis, const Stage& s, Settings cfg, int sig) {
  auto& c = redis.client();
  MidJob r;
  std::vector<std::string> ids;
  auto p = start_busy(redis, s, cfg, ids, r.running);
  auto sent = p->send_signal(sig);
  r.behind.assign(ids.begin() + static_cast<long>(r.running.size()), ids.end());
  finish(*p, sent, cfg.step * r.steps + cfg.interval + cfg.block + milliseconds(5000), r);
  for (auto& id : r.running) r.running_after.push_back(job_state(c, cfg.queue, id));
  for (auto& id : r.behind) {
    auto st = job_state(c, cfg.queue, id);
    if (st.attempts > 0) ++r.behind_started;
    if (st.waiting) ++r.behind_waiting;
  }
  return r;
}

int blocked_clients(testkit::RedisClient& c) {
  auto list = c.command({"CLIENT", "LIST"});
  int n = 0;
  for (std::size_t at = 0; (at = list.find(" flags=b ", at)) != std::string::npos; ++at) ++n;
  return n;
}

Stopped stop_while_idle(RedisServer& redis, const Stage& s, Settings cfg) {
  Stopped r;
  auto p = start(s, redis, cfg);
  // Every worker says "idle" once, when its first wait for a job times out.
  for (int i = 0; i < workers(s, cfg); ++i) p->expect_line("idle: queue empty", milliseconds(10000) + cfg.block);
  if (s.reliable) {
    // ... and then waits again. Signalled before every worker is back in
    // its blocking wait, a worker still on its way there would see the stop
    // at once, and the stop would look faster than the wait allows.
    auto deadline = testkit::Clock::now() + testkit::scaled(milliseconds(10000));
    while (blocked_clients(redis.client()) < workers(s, cfg) && testkit::Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(1));  // polling, not waiting for it
  }
  auto sent = p->send_signal(SIGTERM);
  finish(*p, sent, cfg.interval + cfg.block + milliseconds(5000), r);
  return r;
}

Overrun stop_during_long_job(RedisServer& redis, const Stage& s, Settings cfg, int steps, milliseconds margin) {
  Overrun r;
  r.job = "long";
  r.steps = steps;
  produce(redis.client(), cfg.queue, payload(r.job, steps), s.streams);
  auto p = start(s, redis, cfg);
  p->expect_line("job long: step 1/", milliseconds(10000));
  auto sent = p->send_signal(SIGTERM);
  finish(*p, sent, cfg.budget + margin, r);
  r.reported = r.err.find("abandoned") != std::string::npos && r.err.find("job " + r.job) != std::string::npos;
  r.state = job_state(redis.client(), cfg.queue, r.job);
  return r;
}

Stopped second_signal(RedisServer& redis, const Stage& s, Settings cfg, milliseconds bound) {
  Stopped r;
  produce(redis.client(), cfg.queue, payload("long", 100), s.streams);
  auto p = start(s, redis, cfg);
  p->expect_line("job long: step 1/", milliseconds(10000));
  p->send_signal(SIGTERM);
  // A step line after the first signal proves it was delivered: two signals
  // of the same kind sent back to back can merge into one.
  p->expect_line("job long: step 2/", milliseconds(10000));
  auto sent = p->send_signal(SIGTERM);
  finish(*p, sent, bound, r);
  return r;
}

KillRestart kill_and_restart(RedisServer& redis, const Stage& s, Settings cfg) {
  auto& c = redis.client();
  KillRestart r;
  {
    auto p = start_busy(redis, s, cfg, r.produced, r.killed);
    p->kill();  // SIGKILL: no handler runs, nothing is flushed
    r.transcript = p->transcript() + "\n";
  }
  {
    auto p = start(s, redis, cfg);
    // The restart drains the queue. Each worker says "idle" once it found
    // the queue empty, so when all of them have, nothing is left to do.
    bool idle = true;
    for (int i = 0; i < workers(s, cfg) && idle; ++i)
      idle = p->wait_for_line("idle: queue empty", milliseconds(30000)).has_value();
    // A stream's entries of the killed consumers come back only once they
    // have been idle for --min-idle-ms: wait for that event, the last job
    // done (bounded), rather than for a time.
    auto deadline = testkit::Clock::now() + testkit::scaled(milliseconds(30000));
    auto produced = static_cast<long long>(r.produced.size());
    while (s.streams && idle && static_cast<long long>(done_ids(c, cfg.queue, r.produced).size()) < produced &&
           testkit::Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(20));
    p->kill();
    r.transcript += p->transcript();
    if (!idle) throw testkit::Failure("the restarted stage never went idle\n" + r.transcript);
  }
  for (auto& id : r.produced) {
    auto st = job_state(c, cfg.queue, id);
    if (!st.done) r.lost.push_back(id);
    if (st.half_done()) r.half_done.push_back(id);
    if (st.attempts > 1) r.reruns[id] = st.attempts;
  }
  return r;
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string out;
  for (auto& i : items) out += (out.empty() ? "" : sep) + i;
  return out;
}

}  // namespace worker_loop

namespace worker_loop {

std::string Chaos::summary() const {
  return "seed " + std::to_string(seed) + ": " + std::to_string(jobs) + " jobs, " + std::to_string(kills) +
         " kill -9 (" + join(killed) + "; " + (killed.empty() ? "-" : killed[0]) + " never restarted): " +
         std::to_string(jobs - static_cast<int>(lost.size())) + " done, " + std::to_string(lost.size()) +
         " lost (" + std::to_string(stranded.size()) + " stranded in a dead worker's list), " +
         std::to_string(duplicates) + " duplicate runs, " + std::to_string(over_cap.size()) + " over the cap of " +
         std::to_string(max_attempts) + ", " + std::to_string(dead_lettered) + " dead-lettered, " +
         std::to_string(elapsed_ms) + " ms";
}

Chaos chaos(RedisServer& redis, const Stage& s, unsigned seed, int jobs, int kills) {
  auto& c = redis.client();
  Chaos r;
  r.seed = seed;
  r.jobs = jobs;
  r.kills = kills;
  r.max_attempts = kills + 1;  // no job can be interrupted more often than there are kills
  std::mt19937 rng(seed);
  Settings cfg;
  cfg.workers = 2;
  cfg.step = milliseconds(10);
  cfg.block = milliseconds(200);
  cfg.lease = milliseconds(500);
  cfg.max_attempts = r.max_attempts;
  std::vector<std::string> ids;
  for (int i = 1; i <= jobs; i += 500) {
    std::vector<std::string> push = {"RPUSH", cfg.queue};  // lists: 500 jobs a command
    for (int j = i; j < std::min(jobs + 1, i + 500); ++j) {
      ids.push_back("c" + std::to_string(j));
      if (s.streams)
        produce(c, cfg.queue, payload(ids.back(), 2), true);
      else
        push.push_back(payload(ids.back(), 2));
    }
    if (!s.streams) c.command(push);
  }
  auto t0 = testkit::Clock::now();
  std::map<std::string, std::unique_ptr<Process>> live;
  int next_name = 1;
  auto launch = [&] {
    std::string name = "w" + std::to_string(next_name++);
    Settings named = cfg;
    named.name = name;
    live[name] = start(s, redis, named);
  };
  for (int i = 0; i < 3; ++i) launch();
  for (auto& [name, p] : live) p->expect_line(": step 1/", milliseconds(10000));  // jobs are flowing
  std::uniform_int_distribution<int> pause_ms(100, 400);
  for (int k = 0; k < kills; ++k) {
    // A random moment: the point of the experiment, not a wait for an event.
    std::this_thread::sleep_for(milliseconds(pause_ms(rng)));
    std::uniform_int_distribution<std::size_t> pick(0, live.size() - 1);
    auto it = std::next(live.begin(), static_cast<long>(pick(rng)));
    it->second->kill();
    r.killed.push_back(it->first);
    live.erase(it);
    if (k > 0) launch();  // under a new name; the first one killed never returns
  }
  // Drained: every job done, or (stages that never reap) every job either
  // done or parked in a dead worker's processing list, the queue empty.
  auto dead_lists = [&] {
    std::vector<std::string> held;
    for (auto& name : r.killed)
      for (auto& list : c.array({"KEYS", cfg.queue + ":processing:" + name + ":*"}))
        for (auto& p : c.array({"LRANGE", list, "0", "-1"})) held.push_back(p);
    return held;
  };
  auto deadline = t0 + testkit::scaled(milliseconds(60000));
  while (testkit::Clock::now() < deadline) {
    auto done = static_cast<long long>(done_ids(c, cfg.queue, ids).size());
    long long dead = c.integer({"LLEN", cfg.queue + ":dead"});
    if (done + dead >= jobs) break;
    if (!s.lease && !s.streams && waiting_payloads(c, cfg.queue).size() == dead_lists().size() &&
        done + dead + static_cast<long long>(dead_lists().size()) >= jobs)
      break;
    std::this_thread::sleep_for(milliseconds(20));
  }
  r.elapsed_ms = std::chrono::duration_cast<milliseconds>(testkit::Clock::now() - t0).count();
  for (auto& [name, p] : live) {
    p->send_signal(SIGTERM);
    p->wait_exit(milliseconds(10000));
  }
  auto held = dead_lists();
  auto done = done_ids(c, cfg.queue, ids);
  auto attempts = attempt_counts(c, cfg.queue, ids);
  for (auto& id : ids) {
    if (!done.count(id)) {
      r.lost.push_back(id);
      for (auto& p : held)
        if (p == payload(id, 2)) r.stranded.push_back(id);
    }
    long long runs = attempts.count(id) ? attempts[id] : 0;
    if (runs > 1) r.duplicates += runs - 1;
    if (runs > r.max_attempts) r.over_cap.push_back(id);
  }
  r.dead_lettered = c.integer({"LLEN", cfg.queue + ":dead"});
  return r;
}

}  // namespace worker_loop
