// 036-ignore-sighup: take every signal that would otherwise kill the program
// mid-record.
//
// Demonstrates: everything 033 does, plus SIGHUP. A terminal that goes away
//   (an ssh session dropped), or anybody sending it, delivers SIGHUP, whose
//   default action terminates the process on the spot, mid-record, exactly
//   like an unhandled SIGTERM. The signal thread takes it too: logged and
//   ignored (this program has nothing to reload). A burst of SIGTERM, SIGINT
//   and SIGHUP is then one orderly stop.
// Still wrong: a second SIGTERM changes nothing. If the current unit of work
//   takes long (or never ends), nobody can make the program stop short of
//   SIGKILL. Stage 040 fixes that.
// Reproduces: the signal storm of a deploy tool or an impatient operator;
//   daemons that use SIGHUP for "reload configuration" take it the same way.
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
    if (stop.request_stop())
      std::printf("shutdown: SIG%s from pid %d, finishing the current record\n", sigabbrev_np(sig), info.si_pid);
    else
      std::printf("shutdown: SIG%s again, still finishing the current record\n", sigabbrev_np(sig));
  }
}
// docs:end signal-thread

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 036-ignore-sighup [--records N (0 = until stopped)] [--record-ms MS] "
                       "[--flush-ms MS] [--out PATH (- = stdout)]");
  const long long records = flags.integer("--records", 0, 0, 1'000'000);
  const auto record_time = flags.millis("--record-ms", 1000, 1, 60'000);
  const auto flush_every = flags.millis("--flush-ms", 1000, 1, 600'000);
  const std::string out = flags.writable_path("--out", "records.txt");
  flags.done();

  // "-" is standard output (the records then mix with the progress lines).
  int fd = out == "-" ? STDOUT_FILENO : ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) support::Flags::fail("--out", "cannot open " + out);

  // docs:begin setup
  // Block first: every thread created from here on inherits this mask, so
  // the signals can only be taken by sigwaitinfo() on the signal thread.
  const sigset_t set = handled_signals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  // "Please stop": requested by the signal thread, and only by it; observed
  // by the main loop. One per process, like the signals it stands for
  // (static also avoids a GCC 12 -Wmaybe-uninitialized false positive inside
  // <stop_token>).
  static std::stop_source stop;
  std::jthread signal_thread(signal_loop, stop);
  // docs:end setup

  // docs:begin flusher
  // The flusher's own stop token means "main has finished writing", which
  // is not the same as "a stop was requested": the records may simply have
  // run out. Keeping the two apart means `stop` is only ever requested by a
  // signal, so the signal thread can tell a first signal from a second one.
  std::jthread flusher([fd, flush_every](std::stop_token finished) {
    std::mutex m;
    std::condition_variable_any cv;
    std::unique_lock lock(m);
    while (!finished.stop_requested()) {
      // Returns early when main says it is finished: the token wakes the wait.
      cv.wait_for(lock, finished, flush_every, [] { return false; });
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
  flusher.request_stop();  // "finished", whether the records ran out or a stop was requested
  flusher.join();          // prompt: the request woke it
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
