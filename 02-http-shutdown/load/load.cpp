// load/load.cpp - see load.hpp.
#include "load.hpp"

#include <hiredis/hiredis.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

namespace load {

namespace {

constexpr const char* kIdsKey = "incr:ids";
constexpr const char* kCounterKey = "incr:counter";

// A connection the server closed (EOF pending) or reset is not reused: the
// next request opens a new one, to wherever the load balancer points now.
bool socket_alive(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  int n = ::poll(&p, 1, 0);
  return n == 0 || (n == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) == 0);
}

struct Result {
  Outcome outcome = Outcome::other;
  bool before_signal = true;
  int port = 0;
};

std::string pad(int index, int width) {
  std::string s = std::to_string(index);
  return std::string(static_cast<std::size_t>(std::max(0, width - static_cast<int>(s.size()))), '0') + s;
}

// Redis state after the run: the persisted ids and the counter.
struct Persisted {
  std::set<std::string> ids;
  long long counter = 0;
  std::string error;
};

Persisted read_redis(const Options& opts) {
  Persisted p;
  redisContext* c = redisConnectWithTimeout(opts.redis_host.c_str(), opts.redis_port, timeval{2, 0});
  if (c == nullptr || c->err != 0) {
    p.error = c != nullptr ? c->errstr : "out of memory";
    if (c != nullptr) redisFree(c);
    return p;
  }
  if (auto* r = static_cast<redisReply*>(redisCommand(c, "SMEMBERS %s", kIdsKey))) {
    if (r->type == REDIS_REPLY_ARRAY)
      for (std::size_t i = 0; i < r->elements; ++i) p.ids.emplace(r->element[i]->str, r->element[i]->len);
    freeReplyObject(r);
  } else {
    p.error = c->errstr;
  }
  if (auto* r = static_cast<redisReply*>(redisCommand(c, "GET %s", kCounterKey))) {
    if (r->type == REDIS_REPLY_STRING) p.counter = std::stoll(std::string(r->str, r->len));
    freeReplyObject(r);
  } else if (p.error.empty()) {
    p.error = c->errstr;
  }
  redisFree(c);
  return p;
}

}  // namespace

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::ok: return "200";
    case Outcome::http_5xx: return "5xx";
    case Outcome::http_other: return "other status";
    case Outcome::refused: return "refused";
    case Outcome::reset: return "reset";
    case Outcome::timeout: return "timeout";
    case Outcome::other: return "other";
  }
  return "other";
}

int Report::errors_before_signal() const {
  int n = 0;
  for (const auto& [k, v] : errors_before) n += v;
  return n;
}

int Report::errors() const {
  int n = errors_before_signal();
  for (const auto& [k, v] : errors_after) n += v;
  return n;
}

Report run(const Target& target, const Options& opts) {
  const int n = opts.requests;
  const int width = static_cast<int>(std::to_string(std::max(0, n - 1)).size());
  std::vector<Result> results(static_cast<std::size_t>(n));
  std::atomic<int> next{0};
  std::atomic<int> current_port{target.port};

  // The stop point: request #signal_after waits until every earlier request
  // has its outcome, so the work they started is known to be pending when
  // the signal is sent; later requests wait for the signal to be sent.
  std::mutex mu;
  std::condition_variable cv;
  int completed_below_stop = 0;
  bool stop_done = opts.signal_after < 0 && opts.signal_at.count() < 0;
  Clock::time_point signal_time{};
  int replacement_port = 0;
  std::jthread lb_switch;
  // Watches the signalled server from the moment of the signal, so the
  // shutdown time is measured while the load goes on.
  std::future<std::optional<std::string>> exit_status;
  Clock::time_point exit_time{};

  auto do_stop = [&] {
    int port = target.start_replacement ? target.start_replacement() : 0;
    if (target.pid > 0) ::kill(target.pid, opts.signal);
    const auto now = Clock::now();
    if (target.wait_exit)
      exit_status = std::async(std::launch::async, [&] {
        auto status = target.wait_exit(opts.exit_timeout);
        exit_time = Clock::now();
        return status;
      });
    std::lock_guard lock(mu);
    signal_time = now;
    replacement_port = port;
    if (port != 0) {
      if (opts.lb_lag.count() <= 0) {
        current_port = port;
      } else {
        lb_switch = std::jthread([&current_port, port, lag = opts.lb_lag](std::stop_token st) {
          std::mutex m;
          std::condition_variable_any c;
          std::unique_lock l(m);
          c.wait_for(l, st, lag, [] { return false; });
          current_port = port;
        });
      }
    }
    stop_done = true;
    cv.notify_all();
  };

  const auto start = Clock::now();
  std::jthread timer;
  if (opts.signal_at.count() >= 0) {
    timer = std::jthread([&](std::stop_token st) {
      std::mutex m;
      std::condition_variable_any c;
      std::unique_lock l(m);
      if (!c.wait_until(l, st, start + opts.signal_at, [] { return false; })) do_stop();
    });
  }

  auto worker = [&] {
    std::unique_ptr<httplib::Client> cli;
    int cli_port = 0;
    for (int i; (i = next.fetch_add(1)) < n;) {
      const auto due = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(i / opts.rate));
      std::this_thread::sleep_until(due);
      if (i == opts.signal_after) {
        {
          std::unique_lock lock(mu);
          cv.wait(lock, [&] { return completed_below_stop == opts.signal_after; });
        }
        do_stop();
      } else if (opts.signal_after >= 0 && i > opts.signal_after) {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return stop_done; });
      }
      bool before;
      {
        std::lock_guard lock(mu);
        before = signal_time == Clock::time_point{};
      }
      const int port = current_port;
      // A client behind a load balancer keeps a live keep-alive connection
      // where it is; a closed one is replaced by a new connection, which the
      // load balancer sends wherever it points now.
      if (cli && !(opts.keep_alive && cli->is_socket_open() && socket_alive(cli->socket()))) cli.reset();
      if (!cli || !opts.keep_alive) {
        cli = std::make_unique<httplib::Client>("127.0.0.1", port);
        cli_port = port;
        cli->set_keep_alive(opts.keep_alive);
        cli->set_connection_timeout(opts.timeout);
        cli->set_read_timeout(opts.timeout);
        cli->set_write_timeout(opts.timeout);
      }
      const auto t0 = Clock::now();
      auto res = cli->Post("/incr?id=" + opts.id_prefix + pad(i, width));
      Result r;
      r.before_signal = before;
      r.port = cli_port;
      if (res) {
        r.outcome = res->status == 200 ? Outcome::ok : res->status >= 500 ? Outcome::http_5xx : Outcome::http_other;
      } else {
        switch (res.error()) {
          case httplib::Error::Connection: r.outcome = Outcome::refused; break;
          case httplib::Error::ConnectionTimeout: r.outcome = Outcome::timeout; break;
          case httplib::Error::Read:
          case httplib::Error::Write:
            r.outcome = Clock::now() - t0 >= opts.timeout - milliseconds(50) ? Outcome::timeout : Outcome::reset;
            break;
          default: r.outcome = Outcome::other;
        }
        cli.reset();  // never reuse a connection that failed
      }
      std::lock_guard lock(mu);
      results[static_cast<std::size_t>(i)] = r;
      if (i < opts.signal_after && ++completed_below_stop == opts.signal_after) cv.notify_all();
    }
  };
  {
    std::vector<std::jthread> workers;
    for (int w = 0; w < std::max(1, opts.connections); ++w) workers.emplace_back(worker);
  }
  timer = {};  // joins; the stop happened or the load ended first
  if (lb_switch.joinable()) {
    lb_switch.request_stop();
    lb_switch.join();
  }

  Report rep;
  rep.sent = n;
  rep.signalled = signal_time != Clock::time_point{};
  rep.replaced = replacement_port != 0;
  std::set<std::string> acked_on_live;  // acknowledged by servers that were not stopped
  for (int i = 0; i < n; ++i) {
    const auto& r = results[static_cast<std::size_t>(i)];
    const std::string id = opts.id_prefix + pad(i, width);
    if (r.before_signal && rep.signalled) ++rep.signalled_after;
    if (r.outcome == Outcome::ok) {
      rep.acked_ids.push_back(id);
      if (!rep.signalled || r.port != target.port) acked_on_live.insert(id);
    } else {
      (r.before_signal ? rep.errors_before : rep.errors_after)[outcome_name(r.outcome)]++;
    }
  }
  rep.acknowledged = static_cast<int>(rep.acked_ids.size());

  // The stopped server's writes are final once it has exited.
  if (exit_status.valid()) {
    auto status = exit_status.get();
    if (status) rep.shutdown_ms = std::chrono::duration_cast<milliseconds>(exit_time - signal_time).count();
    rep.exit_status = status ? *status : "still running " + std::to_string(opts.exit_timeout.count()) + " ms after the signal";
  }
  // Servers still running are given time to finish their background writes.
  Persisted p = read_redis(opts);
  for (auto deadline = Clock::now() + opts.settle; p.error.empty() && Clock::now() < deadline;) {
    if (std::all_of(acked_on_live.begin(), acked_on_live.end(), [&](const auto& id) { return p.ids.count(id) > 0; }))
      break;
    std::this_thread::sleep_for(milliseconds(20));
    p = read_redis(opts);
  }
  rep.redis_error = p.error;
  std::set<std::string> acked(rep.acked_ids.begin(), rep.acked_ids.end());
  for (const auto& id : rep.acked_ids) {
    if (p.ids.count(id) > 0) {
      ++rep.persisted;
    } else {
      ++rep.lost;
      rep.lost_ids.push_back(id);
    }
  }
  for (const auto& id : p.ids)
    if (acked.count(id) == 0) ++rep.persisted_unacked;
  rep.duplicated = p.counter - static_cast<long long>(p.ids.size());
  return rep;
}

std::string Report::render(const Options& opts) const {
  std::ostringstream o;
  auto errors_line = [](const std::map<std::string, int>& m) {
    std::string s;
    for (const char* k : {"refused", "reset", "timeout", "5xx", "other status", "other"}) {
      auto it = m.find(k);
      s += std::string(s.empty() ? "" : ", ") + k + " " + std::to_string(it == m.end() ? 0 : it->second);
    }
    return s;
  };
  char rate[32];
  std::snprintf(rate, sizeof rate, "%g", opts.rate);
  o << "load: " << sent << " requests at " << rate << "/s over " << opts.connections << " "
    << (opts.keep_alive ? "keep-alive" : "fresh") << " connections\n";
  if (signalled)
    o << "stop: SIG" << sigabbrev_np(opts.signal) << " after " << signalled_after << " requests"
      << (replaced ? ", replacement instance started first" : "")
      << (replaced && opts.lb_lag.count() > 0
              ? ", new connections switch to it " + std::to_string(opts.lb_lag.count()) + " ms later"
              : "")
      << "\n";
  o << "sent                 " << sent << "\n";
  o << "acknowledged (200)   " << acknowledged << "\n";
  o << "persisted            " << persisted << "\n";
  o << "lost                 " << lost << "   (acknowledged, not in Redis)\n";
  if (!lost_ids.empty()) {
    o << "lost ids             ";
    for (std::size_t i = 0; i < std::min<std::size_t>(5, lost_ids.size()); ++i) o << lost_ids[i] << " ";
    o << (lost_ids.size() > 5 ? "..." : "") << "\n";
  }
  o << "duplicated           " << duplicated << "   (writes beyond one per id)\n";
  o << "persisted, not acked " << persisted_unacked << "\n";
  o << "errors before stop   " << errors_before_signal() << "   (" << errors_line(errors_before) << ")\n";
  if (signalled) {
    int after = 0;
    for (const auto& [k, v] : errors_after) after += v;
    o << "errors after stop    " << after << "   (" << errors_line(errors_after) << ")\n";
    o << "shutdown             " << exit_status;
    if (shutdown_ms >= 0) o << " " << shutdown_ms << " ms after the signal";
    o << "\n";
  }
  if (!redis_error.empty()) o << "redis                cannot read: " << redis_error << "\n";
  o << "verdict              "
    << (!redis_error.empty() ? "UNKNOWN: Redis could not be read"
        : lost > 0           ? "LOST " + std::to_string(lost) + " acknowledged writes"
                             : "nothing acknowledged was lost")
    << "\n";
  return o.str();
}

}  // namespace load
