// hiredis with ownership: what the Redis peers of bench/compare.sh (redis-streams, redis-rr,
// redis-pubsub) share. Every call throws std::runtime_error naming what failed. A Context
// is one connection, used by one thread.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace qbus::bench::redis {

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

inline Context connect(const std::string& socket) {
  Context c(redisConnectUnix(socket.c_str()));
  if (!c) throw std::runtime_error("redisConnectUnix: out of memory");
  if (c->err) throw std::runtime_error("connect to " + socket + ": " + c->errstr);
  return c;
}

// The next pipelined reply; throws on a connection error or an error reply.
inline Reply next_reply(redisContext* c, const char* what) {
  void* raw = nullptr;
  if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
    throw std::runtime_error(std::string(what) + ": " + c->errstr);
  }
  Reply r(static_cast<redisReply*>(raw));
  if (r->type == REDIS_REPLY_ERROR) {
    throw std::runtime_error(std::string(what) + ": " + std::string(r->str, r->len));
  }
  return r;
}

// Sends one command built from `args` (binary safe) without reading its reply.
inline void append(redisContext* c, const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()) !=
      REDIS_OK) {
    throw std::runtime_error(std::string("redisAppendCommandArgv: ") + c->errstr);
  }
}

inline Reply command(redisContext* c, const std::vector<std::string>& args, const char* what) {
  append(c, args);
  return next_reply(c, what);
}

}  // namespace qbus::bench::redis
