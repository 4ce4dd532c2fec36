// One test per stage and property of the chapter's stage table (README.md),
// including the properties a stage gets wrong.
#include <signal.h>

#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace ch01;
using namespace std::chrono_literals;
using testkit::scaled;

namespace {

const RecordOptions kMidRecord{};  // record 2 of 500 ms, flusher every 4000 ms

long long bound_ms(long long base) { return scaled(testkit::milliseconds(base)).count(); }

}  // namespace

TEST_CASE("every stage writes complete records and exits 0 when it is not interrupted") {
  auto name = GENERATE(from_range(kRecordStages));
  INFO(name);
  TempDir dir;
  testkit::Process p({stage(name), "--records", "3", "--record-ms", "20", "--flush-ms", "5",
                      "--out", dir.file("r.txt")});
  auto st = p.expect_exit(10s);
  INFO(p.transcript());
  CHECK(st.ok());
  auto f = RecordFile::read(dir.file("r.txt"));
  CHECK(f.begun == 3);
  CHECK(f.ended == 3);
  CHECK_THAT(p.out(), Catch::Contains("done: 3 records written"));
}

// --- 010-naive-exit -------------------------------------------------------

TEST_CASE("010 naive: SIGTERM mid-record kills it, exit status 'killed by SIGTERM'") {
  auto o = signal_mid_record("010-naive-exit", kMidRecord);
  INFO(o.transcript);
  CHECK(o.status.killed_by(SIGTERM));
  CHECK(o.stop_ms < bound_ms(1000));  // instantly: nothing waits for the record
}

TEST_CASE("010 naive: SIGTERM mid-record leaves a torn record in the file") {
  auto o = signal_mid_record("010-naive-exit", kMidRecord);
  INFO(o.transcript);
  CHECK(o.file.begun == 2);
  CHECK(o.file.ended == 1);
  CHECK(o.file.torn());
}

TEST_CASE("010 naive: SIGINT (Ctrl+C) tears the record just the same") {
  auto o = signal_mid_record("010-naive-exit", {.signal = SIGINT});
  INFO(o.transcript);
  CHECK(o.status.killed_by(SIGINT));
  CHECK(o.file.torn());
}

TEST_CASE("010 naive: a signal storm kills it mid-record") {
  auto o = signal_storm("010-naive-exit");
  INFO(o.transcript);
  CHECK_FALSE(o.status.exited);
  CHECK(o.file.torn());
}

// --- 020-flag-in-handler --------------------------------------------------

TEST_CASE("020 flag: SIGTERM mid-record finishes the record and exits 0") {
  auto o = signal_mid_record("020-flag-in-handler", kMidRecord);
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 2);
  CHECK_FALSE(o.file.torn());
  CHECK_THAT(o.transcript, Catch::Contains("shutdown: SIGTERM seen after record 2"));
}

TEST_CASE("020 flag: SIGINT is handled like SIGTERM") {
  auto o = signal_mid_record("020-flag-in-handler", {.signal = SIGINT});
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK_FALSE(o.file.torn());
}

TEST_CASE("020 flag: stopping waits for the flusher's sleep, far longer than the record") {
  // The flusher sleeps 4000 ms at a time and only then looks at the flag.
  // The signal arrives ~500 ms after it started sleeping, so the exit comes
  // ~3.5 s after the signal although the record ends within 500 ms.
  auto o = signal_mid_record("020-flag-in-handler", kMidRecord);
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK(o.stop_ms > kMidRecord.record_ms + 1000);
}

TEST_CASE("020 flag: a second SIGTERM does not force the exit") {
  auto o = second_signal("020-flag-in-handler");
  INFO(o.transcript);
  CHECK(o.status.ok());          // it still finished the record...
  CHECK(o.forced_ms > 1500);     // ...taking the rest of a 4000 ms record
  CHECK_FALSE(o.file.torn());
}

TEST_CASE("020 flag: a signal storm with SIGHUP kills it mid-record") {
  auto o = signal_storm("020-flag-in-handler");
  INFO(o.transcript);
  CHECK(o.status.killed_by(SIGHUP));
  CHECK(o.file.torn());
}

// --- 030-signal-thread ----------------------------------------------------

TEST_CASE("030 signal thread: SIGTERM mid-record finishes the record and exits 0") {
  auto o = signal_mid_record("030-signal-thread", kMidRecord);
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 2);
  CHECK_FALSE(o.file.torn());
  CHECK_THAT(o.transcript, Catch::Contains("shutdown: SIGTERM from pid "));
}

TEST_CASE("030 signal thread: SIGINT is handled like SIGTERM") {
  auto o = signal_mid_record("030-signal-thread", {.signal = SIGINT});
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK_FALSE(o.file.torn());
}

TEST_CASE("030 signal thread: the stop request wakes the flusher, so it stops with the record") {
  auto o = signal_mid_record("030-signal-thread", kMidRecord);
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK(o.stop_ms < kMidRecord.record_ms + bound_ms(1000));
}

TEST_CASE("030 signal thread: a second SIGTERM does not force the exit") {
  auto o = second_signal("030-signal-thread");
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK(o.forced_ms > 1500);
  CHECK_FALSE(o.file.torn());
  CHECK_THAT(o.transcript, Catch::Contains("SIGTERM again, still finishing the current record"));
}

TEST_CASE("030 signal thread: SIGHUP is logged and ignored") {
  auto o = signal_mid_record("030-signal-thread", {.record_ms = 300, .flush_ms = 100, .signal = SIGHUP});
  INFO(o.transcript);
  CHECK_FALSE(o.stopped_on_its_own);  // SIGHUP is not a stop request: it kept writing
  CHECK(o.file.ended > 2);
  CHECK_THAT(o.transcript, Catch::Contains("signal: SIGHUP from pid"));
}

TEST_CASE("030 signal thread: a storm of SIGTERM/SIGINT/SIGHUP is one orderly stop") {
  auto o = signal_storm("030-signal-thread");
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 1);
  CHECK_FALSE(o.file.torn());
}

// --- 040-second-signal ----------------------------------------------------

TEST_CASE("040 second signal: SIGTERM mid-record finishes the record and exits 0") {
  auto o = signal_mid_record("040-second-signal", kMidRecord);
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK(o.file.begun == 2);
  CHECK_FALSE(o.file.torn());
  CHECK(o.stop_ms < kMidRecord.record_ms + bound_ms(1000));
}

TEST_CASE("040 second signal: SIGINT is handled like SIGTERM") {
  auto o = signal_mid_record("040-second-signal", {.signal = SIGINT});
  INFO(o.transcript);
  CHECK(o.status.ok());
  CHECK_FALSE(o.file.torn());
}

TEST_CASE("040 second signal: a second SIGTERM exits at once with status 1") {
  auto o = second_signal("040-second-signal");
  INFO(o.transcript);
  CHECK(o.status.exited);
  CHECK(o.status.code == 1);
  CHECK(o.forced_ms < bound_ms(1000));  // not the 4000 ms the record needs
  CHECK_THAT(o.transcript, Catch::Contains("shutdown: second signal (SIGTERM), forcing exit"));
}

TEST_CASE("040 second signal: a signal storm forces a prompt exit 1, never a crash or a hang") {
  auto o = signal_storm("040-second-signal");
  INFO(o.transcript);
  CHECK(o.stopped_on_its_own);
  CHECK(o.status.exited);
  CHECK(o.status.code == 1);
  CHECK(o.stop_ms < bound_ms(1000));
}
