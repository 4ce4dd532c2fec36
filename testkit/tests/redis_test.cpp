#include <catch2/catch.hpp>

#include "testkit/net.hpp"
#include "testkit/redis.hpp"

using namespace testkit;

TEST_CASE("the Redis fixture starts a real server on a free port and stops it") {
  int port = 0;
  {
    RedisServer redis;
    port = redis.port();
    CHECK(port_accepts(port));
    CHECK(redis.client().command({"PING"}) == "PONG");
    CHECK(redis.client().integer({"SADD", "ids", "a", "b", "a"}) == 2);
    CHECK(redis.client().smembers("ids") == std::set<std::string>{"a", "b"});
    CHECK(redis.client().integer({"INCR", "counter"}) == 1);
    CHECK(redis.client().command({"GET", "missing"}) == "(nil)");
    // No persistence: the test leaves nothing behind and reads nothing old.
    CHECK(redis.client().array({"CONFIG", "GET", "save"}).at(1).empty());
    CHECK(redis.client().array({"CONFIG", "GET", "appendonly"}).at(1) == "no");
  }
  CHECK_FALSE(port_accepts(port));
}

TEST_CASE("a Redis restart on the same port loses the data (no persistence)") {
  RedisServer redis;
  redis.client().command({"SET", "k", "v"});
  redis.stop();
  CHECK_FALSE(port_accepts(redis.port()));
  CHECK_THROWS_AS(redis.client(), Failure);
  redis.start();
  CHECK(redis.client().command({"GET", "k"}) == "(nil)");
}

TEST_CASE("Redis errors are reported, not swallowed") {
  RedisServer redis;
  redis.client().command({"SET", "k", "v"});
  CHECK_THROWS_WITH(redis.client().integer({"INCR", "k"}), Catch::Contains("not an integer"));
}
