// testkit/redis.hpp - a real redis-server for one test, and a tiny client.
//
//   testkit::RedisServer redis;              // started on a free loopback port
//   redis.client().command({"SADD", "k", "v"});
//   redis.stop(); redis.start();             // same port: a Redis restart
//
// The server runs with --save '' --appendonly no: nothing is persisted and
// nothing is left behind.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "testkit/process.hpp"

struct redisContext;

namespace testkit {

// A synchronous hiredis connection (one per thread: hiredis is not
// thread-safe).
class RedisClient {
 public:
  RedisClient(const std::string& host, int port);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Runs a command; the reply rendered as a string (integers in decimal,
  // nil as "(nil)", arrays joined with '\n'). Throws Failure on error.
  std::string command(const std::vector<std::string>& args);
  long long integer(const std::vector<std::string>& args);
  std::vector<std::string> array(const std::vector<std::string>& args);
  std::set<std::string> smembers(const std::string& key);

 private:
  redisContext* ctx_ = nullptr;
};

class RedisServer {
 public:
  RedisServer();  // starts it; throws Failure if it cannot
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:PORT"
  RedisClient& client();        // lazily connected, for the test thread

  void stop();   // SIGTERM, wait for exit (used to simulate an outage)
  void start();  // (re)start on the same port
  bool running() const { return process_ != nullptr; }

 private:
  int port_ = 0;
  std::unique_ptr<Process> process_;
  std::unique_ptr<RedisClient> client_;
};

}  // namespace testkit
