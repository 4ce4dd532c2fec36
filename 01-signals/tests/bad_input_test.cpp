// Bad input: every flag of every stage is validated up front; the error is
// one line naming the flag, and the exit status is 2.
#include <catch2/catch.hpp>

#include "scenarios.hpp"

using namespace ch01;
using namespace std::chrono_literals;

using testkit::run_to_exit;

TEST_CASE("record writers reject invalid flags with one line naming the flag and exit 2") {
  auto name = GENERATE(from_range(kRecordStages));
  auto [args, message] = GENERATE(table<std::vector<std::string>, std::string>({
      {{"--records", "abc"}, "error: --records: not a number: 'abc'"},
      {{"--records", "-1"}, "error: --records: out of range"},
      {{"--records", "10000000000000000000000"}, "error: --records: out of range"},
      {{"--record-ms", "0"}, "error: --record-ms: out of range"},
      {{"--record-ms", "3600000"}, "error: --record-ms: out of range"},
      {{"--record-ms", "1.5"}, "error: --record-ms: not a number: '1.5'"},
      {{"--flush-ms", "-5"}, "error: --flush-ms: out of range"},
      {{"--out", "/nonexistent-dir/records.txt"}, "error: --out: cannot write '/nonexistent-dir/records.txt'"},
      {{"--out", "/"}, "error: --out: cannot write '/': Is a directory"},
      {{"--out="}, "error: --out: must not be empty"},
      {{"--records"}, "error: --records: missing value"},
      {{"--speed", "9"}, "error: --speed: unknown flag"},
  }));
  args.insert(args.begin(), stage(name));
  auto r = run_to_exit(args);
  INFO(name << ": " << r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK(r.err.rfind(message, 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.out.empty());  // nothing started
}

TEST_CASE("050 init rejects invalid flags and a missing command with exit 2") {
  auto [args, message] = GENERATE(table<std::vector<std::string>, std::string>({
      {std::vector<std::string>{}, "error: --: a command to run is required after --"},
      {{"--kill-after-ms", "-1", "--", "true"}, "error: --kill-after-ms: out of range"},
      {{"--kill-after-ms", "soon", "--", "true"}, "error: --kill-after-ms: not a number: 'soon'"},
      {{"true"}, "error: true: unexpected argument"},
  }));
  args.insert(args.begin(), stage("050-pid1-init"));
  auto r = run_to_exit(args);
  INFO(r.err);
  CHECK(r.status.code == 2);
  CHECK(r.err.rfind(message, 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

TEST_CASE("050 init: a command that does not exist is exit 127 with the reason") {
  auto r = run_to_exit({stage("050-pid1-init"), "--", "/nonexistent/program"});
  CHECK(r.status.exited);
  CHECK(r.status.code == 127);
  CHECK_THAT(r.err, Catch::Contains("init: cannot run /nonexistent/program: No such file or directory"));
}

TEST_CASE("050 init: the child's exit code is passed through") {
  auto r = run_to_exit({stage("050-pid1-init"), "--", "sh", "-c", "exit 7"});
  CHECK(r.status.exited);
  CHECK(r.status.code == 7);
}
