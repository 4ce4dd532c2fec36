// The part of chapter 02's stages that is the same in every stage and is
// not a lesson about shutdown: the /incr id check and the Redis writer.
// (Each stage includes it, so `diff` of two stages shows only the lesson.)
#pragma once

#include <hiredis/hiredis.h>
#include <httplib.h>
#include <sys/time.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <utility>

namespace incr {

constexpr const char* kIdsKey = "incr:ids";          // SADD: which ids were persisted
constexpr const char* kCounterKey = "incr:counter";  // INCR: how many writes happened
constexpr std::size_t kMaxIdBytes = 128;

// Why an /incr request is refused, or "" when its id is acceptable.
inline std::string bad_id(const httplib::Request& req) {
  if (!req.has_param("id")) return "missing id";
  const std::string id = req.get_param_value("id");
  if (id.empty()) return "empty id";
  if (id.size() > kMaxIdBytes) return "id longer than 128 bytes";
  for (unsigned char c : id)
    if (c < 0x21 || c > 0x7e) return "id must be printable ASCII without spaces";
  return "";
}

class Redis {
 public:
  Redis(std::string host, int port) : host_(std::move(host)), port_(port) {}
  ~Redis() { close(); }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // Connects and PINGs: "" or why not.
  std::string connect() {
    std::lock_guard lock(mu_);
    return connect_locked();
  }

  // docs:begin persist
  // One write per id, however often it is sent: the script runs atomically
  // in Redis, and INCRs the counter only when SADD added the id. A client
  // that retries a request whose answer it lost cannot count twice.
  // "" when the id is persisted (now or before), or why it failed.
  std::string persist(const std::string& id) {
    static constexpr const char* kOncePerId =
        "if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then return redis.call('INCR', KEYS[2]) end return 0";
    std::lock_guard lock(mu_);
    if (closed_) return "write after the Redis connection was closed";  // a shutdown-order bug: say so
    if (ctx_ == nullptr || ctx_->err != 0) {
      if (auto why = connect_locked(); !why.empty()) return why;
    }
    auto* reply = static_cast<redisReply*>(
        redisCommand(ctx_, "EVAL %s 2 %s %s %b", kOncePerId, kIdsKey, kCounterKey, id.data(), id.size()));
    if (reply == nullptr) return ctx_->errstr;  // context unusable now: reconnect next time
    std::string why = reply->type == REDIS_REPLY_ERROR ? reply->str : "";
    freeReplyObject(reply);
    return why;
  }
  // docs:end persist

  // Final: a write after this fails, instead of silently reconnecting.
  void close() {
    std::lock_guard lock(mu_);
    if (ctx_ != nullptr) redisFree(ctx_);
    ctx_ = nullptr;
    closed_ = true;
  }

 private:
  std::string connect_locked() {
    if (ctx_ != nullptr) redisFree(ctx_);
    ctx_ = redisConnectWithTimeout(host_.c_str(), port_, timeval{1, 0});
    if (ctx_ == nullptr) return "out of memory";
    if (ctx_->err != 0) return ctx_->errstr;
    redisSetTimeout(ctx_, timeval{2, 0});  // a stalled Redis fails a write instead of hanging it
    auto* reply = static_cast<redisReply*>(redisCommand(ctx_, "PING"));
    if (reply == nullptr) return ctx_->errstr;
    std::string why = reply->type == REDIS_REPLY_ERROR ? reply->str : "";
    freeReplyObject(reply);
    return why;
  }

  std::string host_;
  int port_;
  std::mutex mu_;
  redisContext* ctx_ = nullptr;
  bool closed_ = false;
};

}  // namespace incr
