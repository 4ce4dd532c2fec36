// timer_queue.hpp - one thread that runs callbacks at set times, for the
// callback-API stages (025a, 025b).
//
// Not part of the lesson: a reaction of gRPC's callback API must not block,
// so "work for work_ms" cannot be a sleep; it becomes a timer (in a real
// service it would be an asynchronous call to something else). What the
// lesson needs from it is cancel(): true when the callback was still
// pending and now never runs, false when it already ran or is running, so
// exactly one of the two sides (the timer, or OnCancel) finishes the call.
// And stop(): a callback may still be inside Finish() when gRPC already
// counts its call as done and Shutdown() has returned, so main() stops this
// thread before the server is destroyed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace timers {

class TimerQueue {
 public:
  using Id = std::uint64_t;  // 0 is never a timer

  TimerQueue() : thread_([this] { run(); }) {}
  ~TimerQueue() { stop(); }
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  // Runs `fn` on the timer thread once `delay` has passed.
  Id after(std::chrono::milliseconds delay, std::function<void()> fn) {
    std::lock_guard lock(mu_);
    const Id id = ++last_id_;
    pending_.emplace(Key{std::chrono::steady_clock::now() + delay, id}, std::move(fn));
    cv_.notify_all();
    return id;
  }

  // Waits for a callback that is running, then ends the thread; callbacks
  // still pending never run. Idempotent.
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // True if `id` was pending: it is removed and will never run.
  bool cancel(Id id) {
    std::lock_guard lock(mu_);
    for (auto it = pending_.begin(); it != pending_.end(); ++it)
      if (it->first.second == id) {
        pending_.erase(it);
        return true;
      }
    return false;
  }

 private:
  using Key = std::pair<std::chrono::steady_clock::time_point, Id>;

  void run() {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      if (pending_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = pending_.begin();
      // A copy: cancel() may erase this entry while we wait.
      const std::chrono::steady_clock::time_point when = first->first.first;
      if (when > std::chrono::steady_clock::now()) {
        cv_.wait_until(lock, when);
        continue;
      }
      std::function<void()> fn = std::move(first->second);
      pending_.erase(first);
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, std::function<void()>> pending_;
  Id last_id_ = 0;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

}  // namespace timers
