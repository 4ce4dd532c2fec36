// 020-flag-in-handler: a signal handler that only sets a flag.
//
// Demonstrates: installing a handler with sigaction() for SIGTERM and SIGINT.
//   The handler does the one thing that is safe in a handler: it stores to a
//   lock-free atomic flag. The main loop checks the flag between records, so
//   the record being written is finished, the file is consistent, and the
//   program exits 0 on its own.
// Still wrong:
//   - the flag cannot wake anybody. The flusher thread sleeps --flush-ms
//     between fsyncs and only looks at the flag when it wakes up, so stopping
//     takes up to a whole flush interval after the last record;
//   - a second SIGTERM does nothing: an impatient operator cannot force it;
//   - SIGHUP (terminal hang-up, or a signal storm) still has its default
//     action and kills the program mid-record.
// Reproduces: the Go pattern of seeds 002/003 (signal.Notify + a flag/channel)
//   done with the C API, and the classic "why not printf in the handler".
//
// Why the handler may not call printf, malloc, a mutex, or a gRPC/httplib
// method: a handler runs *on top of* whatever the interrupted thread was
// doing. If that thread was inside printf (holding the stdout lock) or malloc
// (holding the arena lock) and the handler calls printf or malloc, it waits
// for a lock its own thread holds and will never release: a deadlock. Worse,
// if the lock is recursive, it corrupts the half-updated data structure.
// gRPC's Server::Shutdown() and httplib's Server::stop() take locks and
// allocate, so they are off limits too. POSIX lists the few
// async-signal-safe functions (write, _exit, sigaction, ...); storing to a
// volatile std::sig_atomic_t or a lock-free std::atomic is the portable way
// to tell the rest of the program.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "support/flags.hpp"

namespace {

constexpr int kLinesPerRecord = 5;

// docs:begin handler
// Written by the handler, read by the threads. Lock-free, so the store
// cannot be interrupted half-way and never takes a lock.
std::atomic<int> g_stop_signal{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int sig) {
  g_stop_signal.store(sig, std::memory_order_relaxed);  // nothing else: no printf, no malloc
}

void install_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // restart interrupted read/write calls
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}
// docs:end handler

bool stop_requested() { return g_stop_signal.load(std::memory_order_relaxed) != 0; }

void write_line(int fd, const std::string& line) {
  std::string text = line + "\n";
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    std::perror("write");
    std::exit(1);
  }
}

// One record: BEGIN, a few lines of payload, END. sleep_for resumes after a
// signal interrupts it, so a record is always written in full.
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

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  support::Flags flags(argc, argv,
                       "usage: 020-flag-in-handler [--records N (0 = until stopped)] [--record-ms MS] "
                       "[--flush-ms MS] [--out PATH (- = stdout)]");
  const long long records = flags.integer("--records", 0, 0, 1'000'000);
  const auto record_time = flags.millis("--record-ms", 1000, 1, 60'000);
  const auto flush_every = flags.millis("--flush-ms", 1000, 1, 600'000);
  const std::string out = flags.writable_path("--out", "records.txt");
  flags.done();

  // "-" is standard output (the records then mix with the progress lines).
  int fd = out == "-" ? STDOUT_FILENO : ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) support::Flags::fail("--out", "cannot open " + out);

  install_handlers();

  std::atomic<bool> finished{false};  // set when all --records are written
  // docs:begin flusher
  std::thread flusher([fd, flush_every, &finished] {
    while (!stop_requested() && !finished) {
      std::this_thread::sleep_for(flush_every);  // the flag cannot cut this short
      ::fsync(fd);
    }
  });
  // docs:end flusher

  std::printf("ready pid=%d out=%s\n", ::getpid(), out.c_str());
  // docs:begin loop
  long long written = 0;
  for (long long n = 1; (records == 0 || n <= records) && !stop_requested(); ++n) {
    write_record(fd, n, record_time);
    written = n;
  }
  if (stop_requested()) {
    // Safe here: this is ordinary code, not the handler.
    std::printf("shutdown: SIG%s seen after record %lld, waiting for the flusher\n",
                sigabbrev_np(g_stop_signal.load()), written);
  }
  finished = true;
  flusher.join();  // up to a whole --flush-ms: nothing can wake it
  // docs:end loop
  ::fsync(fd);
  std::printf("done: %lld records written\n", written);
  return 0;
}
