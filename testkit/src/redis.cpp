#include "testkit/redis.hpp"

#include <hiredis/hiredis.h>
#include <signal.h>

#include "testkit/net.hpp"

#ifndef TESTKIT_REDIS_SERVER
#define TESTKIT_REDIS_SERVER "redis-server"
#endif

namespace testkit {
namespace {

std::string render(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string s;
      for (size_t i = 0; i < r->elements; ++i) {
        if (i) s += '\n';
        s += render(r->element[i]);
      }
      return s;
    }
    default:
      return std::string(r->str, r->len);
  }
}

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

Reply run(redisContext* ctx, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  auto* r = static_cast<redisReply*>(
      redisCommandArgv(ctx, static_cast<int>(args.size()), argv.data(), lens.data()));
  if (!r) throw Failure("redis: " + args.at(0) + ": " + ctx->errstr);
  Reply reply(r);
  if (r->type == REDIS_REPLY_ERROR) throw Failure("redis: " + args.at(0) + ": " + render(r));
  return reply;
}

}  // namespace

RedisClient::RedisClient(const std::string& host, int port) {
  timeval tv{5, 0};
  ctx_ = redisConnectWithTimeout(host.c_str(), port, tv);
  if (!ctx_ || ctx_->err) {
    std::string why = ctx_ ? ctx_->errstr : "out of memory";
    if (ctx_) redisFree(ctx_);
    throw Failure("redis: cannot connect to " + host + ":" + std::to_string(port) + ": " + why);
  }
  redisSetTimeout(ctx_, tv);
}

RedisClient::~RedisClient() {
  if (ctx_) redisFree(ctx_);
}

std::string RedisClient::command(const std::vector<std::string>& args) {
  return render(run(ctx_, args).get());
}

long long RedisClient::integer(const std::vector<std::string>& args) {
  auto r = run(ctx_, args);
  if (r->type != REDIS_REPLY_INTEGER) throw Failure("redis: " + args.at(0) + ": not an integer reply");
  return r->integer;
}

std::vector<std::string> RedisClient::array(const std::vector<std::string>& args) {
  auto r = run(ctx_, args);
  std::vector<std::string> out;
  if (r->type != REDIS_REPLY_ARRAY) throw Failure("redis: " + args.at(0) + ": not an array reply");
  for (size_t i = 0; i < r->elements; ++i) out.push_back(render(r->element[i]));
  return out;
}

std::set<std::string> RedisClient::smembers(const std::string& key) {
  auto v = array({"SMEMBERS", key});
  return {v.begin(), v.end()};
}

RedisServer::RedisServer() {
  for (int attempt = 0;; ++attempt) {
    port_ = free_port();
    try {
      start();
      return;
    } catch (const Failure&) {
      // Another process may have taken the port between free_port() and
      // redis binding it; try a different port a few times.
      process_.reset();
      if (attempt == 4) throw;
    }
  }
}

RedisServer::~RedisServer() {
  client_.reset();
  if (process_) {
    process_->send_signal(SIGTERM);
    if (!process_->wait_exit(milliseconds(5000))) process_->kill();
  }
}

std::string RedisServer::address() const { return "127.0.0.1:" + std::to_string(port_); }

void RedisServer::start() {
  if (process_) return;
  process_ = std::make_unique<Process>(std::vector<std::string>{
      TESTKIT_REDIS_SERVER, "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
      "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"});
  process_->expect_line("Ready to accept connections", milliseconds(10000));
}

void RedisServer::stop() {
  client_.reset();
  if (!process_) return;
  process_->send_signal(SIGTERM);
  process_->expect_exit(milliseconds(10000));
  process_.reset();
}

RedisClient& RedisServer::client() {
  if (!process_) throw Failure("redis: server is stopped");
  if (!client_) client_ = std::make_unique<RedisClient>("127.0.0.1", port_);
  return *client_;
}

}  // namespace testkit
