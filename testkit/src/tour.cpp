#include "testkit/tour.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "testkit/process.hpp"

namespace testkit {
namespace {

using Clock = std::chrono::steady_clock;

// What the progress line shows. Never destroyed: the signal thread and the
// ticker are detached and may still look at it while the program exits.
struct State {
  std::mutex mu;
  std::condition_variable redraw;
  std::map<int, std::function<void()>> cleanups;
  int next_cleanup_id = 1;
  std::string chapter, stage, scenario;
  Clock::time_point started = Clock::now();
  bool tty = false, lines = false, done = false, drawn = false;
  std::atomic<bool> stopping{false};
};
State& state = *new State;
std::mutex& mu = state.mu;

// The signal thread: waits for SIGINT/SIGTERM, then stops the tour.
[[noreturn]] void stop_on_signal(sigset_t set) {
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  state.stopping = true;
  {
    std::lock_guard lock(mu);
    if (state.drawn) std::fputs("\r\033[K", stderr);
    state.done = true;
  }
  std::fprintf(stderr, "tour: %s: stopping the current scenario and every process it started\n",
               sig == SIGINT ? "SIGINT" : "SIGTERM");
  // Ask first, as the course teaches; force what has not ended after a short grace.
  const auto groups = detail::take_live_groups_and_refuse_new();
  detail::end_groups(groups.data(), groups.size());
  std::map<int, std::function<void()>> todo;
  {
    std::lock_guard lock(mu);
    todo.swap(state.cleanups);
  }
  for (auto& [id, cleanup] : todo) {
    try {
      cleanup();
    } catch (...) {
    }
  }
  std::fflush(stdout);
  std::_Exit(128 + sig);
}

void draw_locked() {
  const double s = std::chrono::duration<double>(Clock::now() - state.started).count();
  if (state.tty) {
    std::fprintf(stderr, "\r\033[K%s › %s › %s  %.1f s", state.chapter.c_str(), state.stage.c_str(),
                 state.scenario.c_str(), s);
    state.drawn = true;
  } else if (state.lines) {
    std::printf("tour: %s %s: %s\n", state.chapter.c_str(), state.stage.c_str(), state.scenario.c_str());
  }
  std::fflush(stderr);
}

}  // namespace

TourRuntime::TourRuntime(std::string chapter) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  // Blocked here, before any other thread exists, so that every thread the
  // tour starts inherits the mask and only the signal thread takes them.
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A shell starts a background job with SIGINT ignored, and an ignored
  // signal is discarded even while blocked: restore the default action so
  // that sigwait() can take it.
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  ::signal(SIGPIPE, SIG_IGN);
  std::thread(stop_on_signal, set).detach();
  // Once the signal thread is stopping the tour, the exit status is its
  // (128 + signal): a main thread that fails or returns meanwhile (a stage
  // it was watching was just killed) waits here for that exit.
  std::atexit([] {
    while (state.stopping) ::pause();
  });

  const char* p = std::getenv("TOUR_PROGRESS");
  std::lock_guard lock(mu);
  state.chapter = std::move(chapter);
  state.tty = ::isatty(STDERR_FILENO) == 1 && !(p && std::string(p) == "lines");
  state.lines = p && std::string(p) == "lines";
  if (state.tty) {
    // The elapsed time ticks while a scenario runs.
    std::thread([] {
      std::unique_lock lock(mu);
      while (!state.done) {
        state.redraw.wait_for(lock, std::chrono::milliseconds(200));
        if (!state.done && !state.stage.empty()) draw_locked();
      }
    }).detach();
  }
}

TourRuntime::~TourRuntime() {
  clear();
  std::lock_guard lock(mu);
  state.done = true;
}

void TourRuntime::stage(const std::string& name) {
  std::lock_guard lock(mu);
  state.stage = name;
  state.scenario = "starting";
  state.started = Clock::now();
  draw_locked();
}

void TourRuntime::scenario(const std::string& what) {
  std::lock_guard lock(mu);
  state.scenario = what;
  draw_locked();
}

void TourRuntime::clear() {
  std::lock_guard lock(mu);
  if (state.drawn) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  state.drawn = false;
  state.stage.clear();
}

int on_stop(std::function<void()> cleanup) {
  std::lock_guard lock(mu);
  state.cleanups.emplace(state.next_cleanup_id, std::move(cleanup));
  return state.next_cleanup_id++;
}

void remove_on_stop(int id) {
  std::lock_guard lock(mu);
  state.cleanups.erase(id);
}

bool colour_wanted() {
  const char* no = std::getenv("NO_COLOR");
  return ::isatty(STDOUT_FILENO) == 1 && !(no && *no);
}

}  // namespace testkit
