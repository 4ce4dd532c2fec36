// Faults and bad input: invalid ids, invalid flags, a port in use, Redis
// unreachable at start or lost while running.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <httplib.h>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "scenarios.hpp"
#include "testkit/net.hpp"

using namespace ch02;
using namespace std::chrono_literals;
using testkit::scaled;

namespace {

// Polls stderr (Process::expect_line watches stdout only).
bool wait_stderr(testkit::Process& p, const std::string& needle, milliseconds timeout) {
  for (auto deadline = testkit::Clock::now() + scaled(timeout); testkit::Clock::now() < deadline;) {
    if (p.err().find(needle) != std::string::npos) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

// Runs a program that must reject its flags: exit 2, one stderr line naming the flag.
void expect_flag_error(std::vector<std::string> argv, const std::string& flag) {
  auto r = testkit::run_to_exit(std::move(argv), 10s);
  INFO(r.transcript);
  CHECK(r.status.exited);
  CHECK(r.status.code == 2);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK_THAT(r.err, Catch::StartsWith("error: " + flag + ":"));
}

// Breaks a running stage's listening socket from outside, as a fault would:
// finds the socket listening on 127.0.0.1:port in /proc/PID/net/tcp (its
// inode) and /proc/PID/fd, takes a duplicate of that descriptor with
// pidfd_getfd() and shuts it down, which makes the stage's blocked accept()
// fail (cpp-httplib 0.11's listen loop then returns false). nullopt when
// done, or why it could not be done (then the caller skips).
std::optional<std::string> break_listener(pid_t pid, int port) {
  char local[32];
  std::snprintf(local, sizeof local, "0100007F:%04X", port);
  std::ifstream tcp("/proc/" + std::to_string(pid) + "/net/tcp");
  std::string line, inode;
  while (inode.empty() && std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string sl, loc, rem, st, queues, tr, retr, uid, timeout, ino;
    fields >> sl >> loc >> rem >> st >> queues >> tr >> retr >> uid >> timeout >> ino;
    if (loc == local && st == "0A") inode = ino;  // 0A: LISTEN
  }
  if (inode.empty()) return "no LISTEN socket on " + std::string(local) + " in /proc/PID/net/tcp";
  int target = -1;
  const auto fds = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& e : std::filesystem::directory_iterator(fds)) {
    std::error_code ec;
    if (std::filesystem::read_symlink(e.path(), ec).string() == "socket:[" + inode + "]")
      target = std::stoi(e.path().filename().string());
  }
  if (target < 0) return "socket inode " + inode + " not among the stage's descriptors";
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) return std::string("pidfd_open: ") + std::strerror(errno);
  const int dup = static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target, 0));
  const int err = errno;
  ::close(pidfd);
  if (dup < 0) return std::string("pidfd_getfd not permitted here: ") + std::strerror(err);
  ::shutdown(dup, SHUT_RDWR);  // the same socket as the stage's: its accept() fails now
  ::close(dup);
  return std::nullopt;
}

}  // namespace

TEST_CASE("every stage answers /incr with a missing, empty, over-long or non-printable id with 400 and writes nothing") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--trace"});
  const std::string long_id(129, 'x');
  for (const std::string& path : std::vector<std::string>{"/incr", "/incr?id=", "/incr?id=" + long_id, "/incr?id=a%01b", "/incr?id=a%20b",
                                 "/incr?id=%C3%A9", "/incr?other=1"}) {
    INFO(path);
    auto h = post(r.port, path);
    CHECK(h.status == 400);
    CHECK_FALSE(h.body.empty());
  }
  CHECK(post(r.port, "/incr?id=" + std::string(128, 'y')).ok());  // 128 bytes is still fine
  r.process->expect_line("write: id=yyyy", 5s);                   // the valid write has landed
  CHECK(redis.client().smembers("incr:ids") == std::set<std::string>{std::string(128, 'y')});
  CHECK(redis.client().command({"GET", "incr:counter"}) == "1");
}

TEST_CASE("every stage answers GET /incr with 405 and counts a repeated id once") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--trace"});
  CHECK(get(r.port, "/incr?id=g1").status == 405);  // a GET must not change state
  for (int i = 0; i < 3; ++i) CHECK(post(r.port, "/incr?id=twice").ok());  // a client retrying
  for (int i = 0; i < 3; ++i) r.process->expect_line("write: id=twice", 5s);
  CHECK(redis.client().smembers("incr:ids") == std::set<std::string>{"twice"});
  CHECK(redis.client().command({"GET", "incr:counter"}) == "1");  // prevented, not only counted
}

TEST_CASE("every stage rejects invalid flags with exit 2 and one line naming the flag") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  const std::string bin = stage(name);
  expect_flag_error({bin, "--port", "abc"}, "--port");
  expect_flag_error({bin, "--port", "-1"}, "--port");
  expect_flag_error({bin, "--port", "65536"}, "--port");
  expect_flag_error({bin, "--work-ms", "-5"}, "--work-ms");
  expect_flag_error({bin, "--work-ms", "99999999999999999999999"}, "--work-ms");
  expect_flag_error({bin, "--handler-ms", "1.5"}, "--handler-ms");
  expect_flag_error({bin, "--redis", "localhost"}, "--redis");
  expect_flag_error({bin, "--redis", "127.0.0.1:0"}, "--redis");
  expect_flag_error({bin, "--redis", "127.0.0.1:http"}, "--redis");
  expect_flag_error({bin, "--threads", "0"}, "--threads");
  expect_flag_error({bin, "--max-pending", "0"}, "--max-pending");
  expect_flag_error({bin, "--no-such-flag", "1"}, "--no-such-flag");
  expect_flag_error({bin, "--listen", "localhost"}, "--listen");
  expect_flag_error({bin, "--listen", "::1"}, "--listen");
  expect_flag_error({bin, "--keep-alive-max", "0"}, "--keep-alive-max");
  expect_flag_error({bin, "--keep-alive-max", "100001"}, "--keep-alive-max");
  if (has_deadline(name)) {
    expect_flag_error({bin, "--shutdown-timeout-ms", "0"}, "--shutdown-timeout-ms");
    expect_flag_error({bin, "--shutdown-timeout-ms", "-100"}, "--shutdown-timeout-ms");
    expect_flag_error({bin, "--shutdown-timeout-ms", "86400000000"}, "--shutdown-timeout-ms");
  } else {
    expect_flag_error({bin, "--shutdown-timeout-ms", "100"}, "--shutdown-timeout-ms");  // not a flag of this stage
  }
  if (drains_first(name)) {
    expect_flag_error({bin, "--drain-delay-ms", "-1"}, "--drain-delay-ms");
    expect_flag_error({bin, "--drain-delay-ms", "5000", "--shutdown-timeout-ms", "5000"}, "--drain-delay-ms");
  }
}

TEST_CASE("every stage binds --listen and closes a keep-alive connection after --keep-alive-max requests") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--listen", "127.0.0.2", "--keep-alive-max", "2"});
  CHECK(get(r.port, "/healthz").error == "refused");  // 127.0.0.1 is not the address it was given
  httplib::Client c("127.0.0.2", r.port);
  c.set_keep_alive(true);
  auto first = c.Get("/healthz");
  auto second = c.Get("/healthz");
  REQUIRE(first);
  REQUIRE(second);
  CHECK(first->get_header_value("Connection") != "close");
  CHECK(second->get_header_value("Connection") == "close");  // the 2nd and last on this connection
}

TEST_CASE("every stage exits 2 with a clear message when its port is in use") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  testkit::RedisServer redis;
  // Hold a port with a plain listening socket.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  const std::string port = std::to_string(ntohs(a.sin_port));
  testkit::Process p({stage(name), "--port", port, "--redis", redis.address()});
  auto st = p.expect_exit(10s);
  ::close(fd);
  INFO(p.transcript());
  CHECK(st.exited);
  CHECK(st.code == 2);  // like any other bad flag value
  CHECK_THAT(p.err(), Catch::Contains("--port: cannot listen on 127.0.0.1:" + port));
  CHECK(p.out().find("ready") == std::string::npos);
}

TEST_CASE("every stage exits 1 within 2 s with a clear message when Redis is unreachable at start") {
  auto name = GENERATE(from_range(kStages));
  INFO(name);
  const int nothing = testkit::free_port();
  testkit::Process p({stage(name), "--port", "0", "--redis", "127.0.0.1:" + std::to_string(nothing)});
  const auto t0 = testkit::Clock::now();
  auto st = p.expect_exit(10s);
  INFO(p.transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  CHECK(p.exit_time() - t0 < scaled(2000ms));
  CHECK_THAT(p.err(), Catch::Contains("--redis: cannot reach Redis at 127.0.0.1:" + std::to_string(nothing)));
  CHECK(p.out().find("ready") == std::string::npos);
}

TEST_CASE("030 and 033: an acknowledged write lost because Redis is gone is named, and the exit status is 1") {
  auto name = GENERATE(as<std::string>{}, "030-track-background-work", "033-second-signal");
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", std::to_string(scaled(500ms).count())});
  REQUIRE(post(r.port, "/incr?id=gone1").ok());
  REQUIRE(post(r.port, "/incr?id=gone2").ok());
  redis.stop();
  CHECK(wait_stderr(*r.process, "write: id=gone2 failed", 10s));
  r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(10s);
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);  // not 0: work was lost
  CHECK_THAT(r.process->err(), Catch::Contains("lost: id=gone1 (acknowledged, write failed)"));
  CHECK_THAT(r.process->err(), Catch::Contains("lost: id=gone2 (acknowledged, write failed)"));
  CHECK_THAT(r.process->out(), Catch::Contains("2 acknowledged writes lost"));
}

TEST_CASE("036 to 050: writes fail while Redis restarts, are retried with backoff, and all land once it is back") {
  auto name = GENERATE(as<std::string>{}, "036-hard-deadline", "040-shutdown-deadline", "045-close-idle-connections",
                       "050-drain-first");
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", std::to_string(scaled(300ms).count()), "--shutdown-timeout-ms", "30000"});
  std::set<std::string> acked;
  for (const char* id : {"f1", "f2", "f3"})
    if (post(r.port, std::string("/incr?id=") + id).ok()) acked.insert(id);
  REQUIRE(acked.size() == 3);
  redis.stop();  // an outage while the writes are pending
  REQUIRE(wait_stderr(*r.process, "write: id=f1 failed", 10s));
  CHECK_THAT(r.process->err(), Catch::Contains("retrying in"));
  redis.start();  // back, empty: every write must be redone
  r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(20s);
  INFO(r.process->transcript());
  CHECK(st.ok());
  CHECK(redis.client().smembers("incr:ids") == acked);
}

TEST_CASE("040 to 050: writes Redis never takes are cancelled at the deadline and reported by id, exit 1") {
  auto name = GENERATE(as<std::string>{}, "040-shutdown-deadline", "045-close-idle-connections", "050-drain-first");
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0", "--shutdown-timeout-ms", std::to_string(scaled(1500ms).count())});
  redis.stop();
  std::set<std::string> acked;
  for (const char* id : {"down1", "down2"})
    if (post(r.port, std::string("/incr?id=") + id).ok()) acked.insert(id);
  REQUIRE(acked.size() == 2);
  REQUIRE(wait_stderr(*r.process, "write: id=down2 failed", 10s));
  r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(20s);
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  // Waiting to retry when the deadline's cancellation came: cancelled, by id.
  CHECK_THAT(r.process->err(), Catch::Contains("cancelled: id=down1 (write failed"));
  CHECK_THAT(r.process->err(), Catch::Contains("cancelled: id=down2 (write failed"));
}

TEST_CASE("040 to 050: near the deadline waits are cancelled, at the deadline what still runs is abandoned, both by id") {
  auto name = GENERATE(as<std::string>{}, "040-shutdown-deadline", "045-close-idle-connections", "050-drain-first");
  INFO(name);
  testkit::RedisServer redis;
  // 1200 ms, not scaled: the write blocked in Redis must still be blocked
  // at the deadline, and the stage's Redis timeout (2 s from the write's
  // start, before SIGTERM) ends that block. The waiting handler has the
  // deadline's last tenth (120 ms) to notice the cancellation: shorter
  // deadlines failed on a machine with a load average of 19.
  std::vector<std::string> extra = {"--work-ms", "0", "--max-pending", "1", "--trace", "--shutdown-timeout-ms", "1200"};
  if (drains_first(name)) extra.insert(extra.end(), {"--drain-delay-ms", "0"});
  auto r = start(name, redis, extra);
  REQUIRE(redis.client().command({"CLIENT", "PAUSE", "5000", "WRITE"}) == "OK");  // writes now block in Redis
  REQUIRE(post(r.port, "/incr?id=blocked").ok());  // answered; its write blocks, holding the only slot
  Http waiting;
  std::thread client([&] { waiting = post(r.port, "/incr?id=waiting", 20s); });
  r.process->expect_line("incr: id=waiting started", 5s);  // its handler waits for a slot
  r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(10s);
  client.join();
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  CHECK(waiting.status == 503);  // told, not cut off
  CHECK_THAT(r.process->out(), Catch::Contains("1 cancelled, 1 abandoned"));
  CHECK_THAT(r.process->err(), Catch::Contains("cancelled: id=waiting (handling the request)"));
  CHECK_THAT(r.process->err(), Catch::Contains("abandoned: id=blocked (writing, attempt 1)"));
}

TEST_CASE("036 hard-deadline: nothing is cancelled: at the deadline every wait is abandoned and its client gets no answer") {
  testkit::RedisServer redis;
  auto r = start("036-hard-deadline", redis, {"--work-ms", "0", "--max-pending", "1", "--trace", "--shutdown-timeout-ms", "800"});
  REQUIRE(redis.client().command({"CLIENT", "PAUSE", "5000", "WRITE"}) == "OK");  // writes now block in Redis
  REQUIRE(post(r.port, "/incr?id=blocked").ok());  // answered; its write blocks, holding the only slot
  Http waiting;
  std::thread client([&] { waiting = post(r.port, "/incr?id=waiting", 20s); });
  r.process->expect_line("incr: id=waiting started", 5s);  // its handler waits for a slot
  r.process->send_signal(SIGTERM);
  auto st = r.process->expect_exit(10s);
  client.join();
  INFO(r.process->transcript());
  CHECK(st.exited);
  CHECK(st.code == 1);
  CHECK(waiting.status == 0);  // cut off: no 503, no answer at all
  CHECK_THAT(r.process->out(), Catch::Contains("2 abandoned"));
  CHECK_THAT(r.process->err(), Catch::Contains("abandoned: id=waiting (handling the request)"));
  CHECK_THAT(r.process->err(), Catch::Contains("abandoned: id=blocked (writing, attempt 1)"));
  CHECK(r.process->err().find("cancelled:") == std::string::npos);
}

TEST_CASE("020 to 050: when the listener fails after ready, the stage exits 1 with a clear line") {
  auto name = GENERATE(from_range(kStages.begin() + 1, kStages.end()));
  INFO(name);
  testkit::RedisServer redis;
  auto r = start(name, redis, {"--work-ms", "0"});
  REQUIRE(post(r.port, "/incr?id=before").ok());  // serving
  if (auto why = break_listener(r.process->pid(), r.port)) {
    WARN("SKIPPED: " << *why);
    return;
  }
  auto status = r.process->wait_exit(scaled(5000ms));
  INFO(r.process->transcript());
  REQUIRE(status);
  CHECK(status->exited);
  CHECK(status->code == 1);
  CHECK_THAT(r.process->err(), Catch::Contains("error: the HTTP server"));
}

TEST_CASE("010 naive: when the listener fails after ready, it exits 0 and says nothing") {
  testkit::RedisServer redis;
  auto r = start("010-naive-exit", redis, {"--work-ms", "0"});
  REQUIRE(post(r.port, "/incr?id=before").ok());
  if (auto why = break_listener(r.process->pid(), r.port)) {
    WARN("SKIPPED: " << *why);
    return;
  }
  auto status = r.process->wait_exit(scaled(5000ms));
  INFO(r.process->transcript());
  REQUIRE(status);
  CHECK(status->ok());
  CHECK(r.process->err().empty());
}
