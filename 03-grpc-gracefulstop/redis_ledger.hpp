// redis_ledger.hpp - where the stages persist the id of every Work RPC.
//
// Not part of any lesson (every stage uses it unchanged, like the flag
// parser): it keeps the stage files about shutdown. Why Redis and not a list
// in the server's memory: the check "was every acknowledged id persisted?"
// must be made *after* the server is gone, including when it was killed, and
// two servers behind one client must share it. An in-process ledger dies
// with the process and proves nothing about a crash.
//
// hiredis contexts are not thread-safe and gRPC runs handlers on a pool of
// threads, so the ledger lends one connection per concurrent caller.
#pragma once

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace ledger {

class RedisLedger {
 public:
  static constexpr const char* kKey = "work:done";

  RedisLedger(std::string host, int port) : host_(std::move(host)), port_(port) {}
  ~RedisLedger() {
    for (auto* c : idle_) redisFree(c);
  }
  RedisLedger(const RedisLedger&) = delete;
  RedisLedger& operator=(const RedisLedger&) = delete;

  // True when Redis answers PING; otherwise *error says why.
  bool ping(std::string* error) { return run({"PING"}, error); }

  // SADD work:done id. True once Redis has it.
  bool persist(const std::string& id, std::string* error) { return run({"SADD", kKey, id}, error); }

 private:
  bool run(const std::vector<std::string>& args, std::string* error) {
    redisContext* c = acquire(error);
    if (!c) return false;
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()));
    bool ok = reply && reply->type != REDIS_REPLY_ERROR;
    if (!ok) *error = reply ? std::string(reply->str, reply->len) : std::string(c->errstr);
    if (reply) freeReplyObject(reply);
    if (reply) {
      release(c);
    } else {
      redisFree(c);  // broken connection: drop it, the next call reconnects
    }
    return ok;
  }

  redisContext* acquire(std::string* error) {
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        redisContext* c = idle_.back();
        idle_.pop_back();
        return c;
      }
    }
    timeval timeout{2, 0};
    redisContext* c = redisConnectWithTimeout(host_.c_str(), port_, timeout);
    if (!c || c->err) {
      *error = c ? c->errstr : "cannot allocate a Redis context";
      if (c) redisFree(c);
      return nullptr;
    }
    redisSetTimeout(c, timeout);
    return c;
  }

  void release(redisContext* c) {
    std::lock_guard lock(mu_);
    idle_.push_back(c);
  }

  std::string host_;
  int port_;
  std::mutex mu_;
  std::vector<redisContext*> idle_;
};

}  // namespace ledger
