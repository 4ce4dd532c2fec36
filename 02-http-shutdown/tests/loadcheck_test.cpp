// The load checker itself: it must tell a losing stage from a correct one by
// ids, with its exit status, and reject bad flags.
#include <catch2/catch.hpp>
#include <sstream>

#include "scenarios.hpp"

using namespace ch02;
using namespace std::chrono_literals;
using testkit::scaled;

namespace {

// The value printed on a "name   value" line of the report.
long long figure(const std::string& out, const std::string& name) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size() || line[name.size()] != ' ') continue;
    return std::stoll(line.substr(line.find_first_not_of(' ', name.size())));
  }
  FAIL("no line '" << name << "' in:\n" << out);
  return 0;
}

testkit::Process rolling_update(const std::string& name) {
  return testkit::Process({stage("loadcheck"), "--start-redis", "--requests", "100", "--rate", "400",
                           "--signal-after", "50", "--restart", "--", stage(name), "--port", "0", "--redis",
                           "{redis}", "--work-ms", std::to_string(scaled(2000ms).count())});
}

}  // namespace

TEST_CASE("loadcheck: a rolling update of 010 loses acknowledged writes, and loadcheck exits 1 naming them") {
  auto p = rolling_update("010-naive-exit");
  auto st = p.expect_exit(60s);
  INFO(p.transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  const auto out = p.out();
  CHECK(figure(out, "sent") == 100);
  CHECK(figure(out, "lost") >= 40);  // the ~50 acknowledged before the stop were all pending (2 s of work outlasts starting the replacement)
  CHECK(figure(out, "lost") == figure(out, "acknowledged (200)") - figure(out, "persisted"));
  CHECK_THAT(out, Catch::Contains("lost ids             r00 r01"));
  CHECK_THAT(out, Catch::Contains("killed by SIGTERM"));
}

TEST_CASE("loadcheck: a rolling update of 050 loses nothing and has no errors, and loadcheck exits 0") {
  auto p = rolling_update("050-drain-first");
  auto st = p.expect_exit(60s);
  INFO(p.transcript());
  CHECK(st.ok());
  const auto out = p.out();
  CHECK(figure(out, "acknowledged (200)") == 100);
  CHECK(figure(out, "persisted") == 100);
  CHECK(figure(out, "lost") == 0);
  CHECK(figure(out, "duplicated") == 0);
  CHECK(figure(out, "errors before stop") == 0);
  CHECK(figure(out, "errors after stop") == 0);
  CHECK_THAT(out, Catch::Contains("shutdown             exit 0"));
}

TEST_CASE("loadcheck: rejects invalid flags with exit 2 and one line naming the flag") {
  const std::string bin = stage("loadcheck");
  struct Case {
    std::vector<std::string> args;
    std::string flag;
  };
  for (const auto& c : std::vector<Case>{
           {{"--port", "8080", "--rate", "0"}, "--rate"},
           {{"--port", "8080", "--requests", "ten"}, "--requests"},
           {{"--port", "8080", "--requests", "5", "--signal-after", "5", "--pid", "1"}, "--signal-after"},
           {{"--port", "8080", "--signal-after", "3"}, "--pid"},
           {{"--requests", "5"}, "--port"},
           {{"--port", "8080", "--redis", "nowhere"}, "--redis"},
           {{"--port", "8080", "--timeout-ms", "-1"}, "--timeout-ms"},
           {{"--port", "8080", "--restart", "--signal-after", "1", "--pid", "1"}, "--restart"},
       }) {
    std::vector<std::string> argv = {bin};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    testkit::Process p(argv);
    auto st = p.expect_exit(10s);
    INFO(p.transcript());
    CHECK(st.exited);
    CHECK(st.code == 2);
    CHECK_THAT(p.err(), Catch::StartsWith("error: " + c.flag + ":"));
  }
}

TEST_CASE("loadcheck: drives a server it did not start, signalling its pid at a chosen time, over fresh connections") {
  testkit::RedisServer redis;
  auto r = start("030-track-background-work", redis, {"--work-ms", std::to_string(scaled(300ms).count())});
  testkit::Process p({stage("loadcheck"), "--port", std::to_string(r.port), "--pid", std::to_string(r.process->pid()),
                      "--redis", redis.address(), "--requests", "60", "--rate", "200", "--fresh",
                      "--signal-at-ms", "150", "--id-prefix", "t"});
  auto st = p.expect_exit(60s);
  INFO(p.transcript() << r.process->transcript());
  CHECK(st.ok());  // 030 loses nothing
  const auto out = p.out();
  CHECK_THAT(out, Catch::Contains("over 8 fresh connections"));
  CHECK_THAT(out, Catch::Contains("shutdown             exited"));
  CHECK(figure(out, "lost") == 0);
  CHECK(figure(out, "acknowledged (200)") >= 1);            // sent in the first 150 ms (how many: machine speed)
  CHECK(figure(out, "errors after stop") >= 1);                 // refused once the listener closed
  CHECK(r.process->expect_exit(10s).ok());
}
