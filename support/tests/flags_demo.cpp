// A program that only parses flags, so the parser's contract can be tested
// through a real process (exit status and stderr).
#include <cstdio>

#include "support/flags.hpp"

int main(int argc, char** argv) {
  support::Flags flags(argc, argv, "usage: flags-demo [--count N] [--wait-ms MS] [--port P] [--redis HOST:PORT] [--listen ADDR] [--id ID] [--out PATH] [--verbose]");
  auto count = flags.integer("--count", 3, 0, 1000);
  auto wait = flags.millis("--wait-ms", 10, 0, 60'000);
  auto port = flags.port("--port", 0);
  auto [host, rport] = flags.host_port("--redis", "127.0.0.1:6379");
  auto listen = flags.ipv4("--listen");
  auto id = flags.text("--id", "x", 8);
  auto out = flags.writable_path("--out", "-");
  bool verbose = flags.present("--verbose");
  flags.done();
  std::printf("count=%lld wait=%lld port=%d redis=%s:%d listen=%s id=%s out=%s verbose=%d rest=%zu\n", count,
              static_cast<long long>(wait.count()), port, host.c_str(), rport, listen.c_str(), id.c_str(), out.c_str(), verbose,
              flags.rest().size());
}
