// 040-second-signal: the first SIGTERM/SIGINT asks for a graceful stop, the
// second one forces the exit.
//
// Demonstrates: everything 030 does (signal thread, std::stop_source, a
//   flusher woken by the token, SIGHUP ignored), plus the escape hatch of
//   kube-apiserver's SetupSignalContext: a second SIGTERM or SIGINT while the
//   graceful stop is running exits at once with status 1. The signal thread
//   runs ordinary code, so it can say so before calling _exit(1). _exit, not
//   exit: destructors and atexit handlers of a program we are abandoning could
//   block (joining the very threads that are stuck).
// Still wrong: nothing for this chapter's single-process program. The forced
//   exit can still tear the current record: that is what "forced" means, and
//   why the first signal must be enough in production. As PID 1 in a
//   container, see 050.
// Reproduces: seed 002, k8s.io/apiserver SetupSignalContext: "If a second
//   signal is caught, the program is terminated with exit code 1", and seed
//   004's forced exit after a wait.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

#include "support/flags.hpp"

namespace {

constexpr int kLinesPerRecord = 5;

void write_line(int fd, const std::string& line) {
  std::string text = line + "\n";
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    std::perror("write");
    std::exit(1);
  }
}

// One record: BEGIN, a few lines of payload, END. A record is never cut
// short: the stop request is honoured between records.
void write_record(int fd, long long n, std::chrono::milliseconds record_time) {
  std::printf("record %lld: begin\n", n);
  write_line(fd, "BEGIN " + std::to_string(n));
  for (int i = 1; i <= kLinesPerRecord; ++i) {
    std::this_thread::sleep_for(record_time / kLinesPerRecord);
    write_line(fd, "  line " + std::to_string(i) + "/" + std::to_string(kLinesPerRecord) + " of record " +
                       std::to_string(n));
  }
  write_line(fd, "END " + std::to_string(n));
  std::printf("record %lld: end\n", n);
}

// docs:begin signal-thread
// Signals this program takes on its signal thread. SIGUSR1 is only used by
// main() to wake that thread when the program ends on its own.
sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1}) sigaddset(&set, sig);
  return set;
}

void signal_loop(std::stop_token finished, std::stop_source stop) {
  const sigset_t set = handled_signals();
  while (!finished.stop_requested()) {
    siginfo_t info{};
    int sig = sigwaitinfo(&set, &info);
    if (sig < 0 || sig == SIGUSR1) continue;  // EINTR, or woken to check `finished`
    if (sig == SIGHUP) {
      std::printf("signal: SIGHUP from pid %d ignored (nothing to reload)\n", info.si_pid);
      continue;
    }
    // Ordinary code: printing, locking and allocating are all fine here.
    if (stop.request_stop()) {
      std::printf("shutdown: SIG%s from pid %d, finishing the current record"
                  " (send it again to force the exit)\n",
                  sigabbrev_np(sig), info.si_pid);
    } else {
      std::printf("shutdown: second signal (SIG%s), forcing exit\n", sigabbrev_np(sig));
      std::fflush(stdout);
      _exit(1);  // no destructors: they might wait for the very work we abandon
    }
  }
}
// docs:end signal-thread

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 040-second-signal [--records N (0 = until stopped)] [--record-ms MS] "
                       "[--flush-ms MS] [--out PATH]");
  const long long records = flags.integer("--records", 0, 0, 1'000'000);
  const auto record_time = flags.millis("--record-ms", 1000, 1, 60'000);
  const auto flush_every = flags.millis("--flush-ms", 1000, 1, 600'000);
  const std::string out = flags.writable_path("--out", "records.txt");
  flags.done();

  int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) support::Flags::fail("--out", "cannot open " + out);

  // docs:begin setup
  // Block first: every thread created from here on inherits this mask, so
  // the signals can only be taken by sigwaitinfo() on the signal thread.
  const sigset_t set = handled_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  // "Please stop", observed by every part of the program. One per process,
  // like the signals it stands for (static also avoids a GCC 12
  // -Wmaybe-uninitialized false positive inside <stop_token>).
  static std::stop_source stop;
  std::jthread signal_thread(signal_loop, stop);
  // docs:end setup

  // docs:begin flusher
  std::jthread flusher([fd, flush_every, token = stop.get_token()] {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    while (!token.stop_requested()) {
      // Returns early when a stop is requested: the token wakes the wait.
      cv.wait_for(lock, token, flush_every, [] { return false; });
      ::fsync(fd);
    }
  });
  // docs:end flusher

  std::printf("ready pid=%d out=%s\n", ::getpid(), out.c_str());
  // docs:begin loop
  long long written = 0;
  for (long long n = 1; (records == 0 || n <= records) && !stop.stop_requested(); ++n) {
    write_record(fd, n, record_time);
    written = n;
  }
  stop.request_stop();  // also when all records are written: the flusher's cue
  flusher.join();       // prompt: the stop request woke it
  // docs:end loop
  ::fsync(fd);
  std::printf("done: %lld records written\n", written);

  // docs:begin wake
  // The signal thread sleeps in sigwaitinfo(); tell it we are finished and
  // wake it with a signal aimed at that thread only.
  signal_thread.request_stop();
  pthread_kill(signal_thread.native_handle(), SIGUSR1);
  // docs:end wake
  return 0;
}
