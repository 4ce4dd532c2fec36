// 010-naive-exit: a program that does not handle signals at all.
//
// Demonstrates: the default action of SIGTERM and SIGINT is to terminate the
//   process on the spot. The kernel does not wait for the record being
//   written to be finished: the file is left with a torn record (a BEGIN
//   without its END), and the exit status says "killed by SIGTERM".
// Still wrong: everything. No signal is handled, the flusher thread is
//   simply abandoned, and as PID 1 in a container (see 050) the same program
//   cannot be stopped by SIGTERM at all.
// Reproduces: seed 004's first list ("kill -9 the old process": in-flight
//   work is cut off) and seed 002's opening remark that Go programs exit
//   immediately on SIGINT/SIGTERM unless they register for them.
//
// The program writes multi-line records to --out, one line at a time with
// write(2), spreading each record over --record-ms. Progress goes to stdout.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
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

// One record: BEGIN, a few lines of payload, END. Each write is a system
// call, so whatever was written before the process dies is in the file.
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
                       "usage: 010-naive-exit [--records N (0 = until stopped)] [--record-ms MS] "
                       "[--flush-ms MS] [--out PATH (- = stdout)]");
  const long long records = flags.integer("--records", 0, 0, 1'000'000);
  const auto record_time = flags.millis("--record-ms", 1000, 1, 60'000);
  const auto flush_every = flags.millis("--flush-ms", 1000, 1, 600'000);
  const std::string out = flags.writable_path("--out", "records.txt");
  flags.done();

  // "-" is standard output (the records then mix with the progress lines).
  int fd = out == "-" ? STDOUT_FILENO : ::open(out.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) support::Flags::fail("--out", "cannot open " + out);

  // A background thread makes the data durable every --flush-ms.
  // docs:begin flusher
  std::thread flusher([fd, flush_every] {
    while (true) {
      std::this_thread::sleep_for(flush_every);
      ::fsync(fd);
    }
  });
  flusher.detach();  // nobody will ever stop it: the process just dies
  // docs:end flusher

  std::printf("ready pid=%d out=%s\n", ::getpid(), out.c_str());
  // docs:begin loop
  for (long long n = 1; records == 0 || n <= records; ++n) {
    write_record(fd, n, record_time);
  }
  // docs:end loop
  ::fsync(fd);
  std::printf("done: %lld records written\n", records);
  return 0;
}
