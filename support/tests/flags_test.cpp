#include <catch2/catch.hpp>

#include "testkit/process.hpp"

using namespace testkit;
using namespace std::chrono_literals;

namespace {

Finished run(std::vector<std::string> args) {
  args.insert(args.begin(), FLAGS_DEMO);
  return run_to_exit(std::move(args), 10s);
}

}  // namespace

TEST_CASE("valid flags are parsed, in both --flag value and --flag=value forms") {
  auto r = run({"--count", "7", "--wait-ms=0", "--port", "65535", "--redis", "localhost:1", "--listen", "10.244.0.7",
                "--id", "abc",
                "--verbose", "--", "x", "y"});
  CHECK(r.status.ok());
  CHECK(r.out == "count=7 wait=0 port=65535 redis=localhost:1 listen=10.244.0.7 id=abc out=- verbose=1 rest=2\n");
}

TEST_CASE("every invalid flag is one line naming the flag, and exit status 2") {
  auto [args, message] = GENERATE(table<std::vector<std::string>, std::string>({
      {{"--count", "abc"}, "error: --count: not a number: 'abc'"},
      {{"--count", "-1"}, "error: --count: out of range: -1 (allowed 0..1000)"},
      {{"--count", "99999999999999999999999"}, "error: --count: out of range"},
      {{"--count", "12x"}, "error: --count: not a number: '12x'"},
      {{"--count="}, "error: --count: not a number: ''"},
      {{"--count"}, "error: --count: missing value"},
      {{"--wait-ms", "60001"}, "error: --wait-ms: out of range"},
      {{"--port", "65536"}, "error: --port: out of range"},
      {{"--redis", "nohost"}, "error: --redis: expected HOST:PORT"},
      {{"--redis", "h:0"}, "error: --redis: expected HOST:PORT with a port in 1..65535"},
      {{"--redis", "h:70000"}, "error: --redis: expected HOST:PORT with a port in 1..65535"},
      {{"--listen", "localhost"}, "error: --listen: expected an IPv4 address such as 127.0.0.1, got 'localhost'"},
      {{"--listen", "127.0.0.256"}, "error: --listen: expected an IPv4 address"},
      {{"--id", "toolongid"}, "error: --id: longer than 8 characters"},
      {{"--out", "/nonexistent-dir/x"}, "error: --out: cannot write '/nonexistent-dir/x'"},
      {{"--verbose=1"}, "error: --verbose: takes no value"},
      {{"--bogus", "1"}, "error: --bogus: unknown flag"},
      {{"stray"}, "error: stray: unexpected argument"},
  }));
  auto r = run(args);
  INFO(r.err);
  CHECK(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK(r.out.empty());
  CHECK(r.err.rfind(message, 0) == 0);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}
