// Queue's out-of-line paths (queue.hpp): choosing among levels and returned messages, and
// storing a message with a priority.
#include "broker/queue.hpp"

namespace qbus::broker {

StoredMessage Queue::front_chosen() const {
  const MessageStore* s = front_store();
  return s ? s->front() : returned_.begin()->second.view();
}

void Queue::pop_chosen() {
  if (expiring_ != 0 && front().meta.expires != Clock::time_point{}) --expiring_;
  MessageStore* s = front_store();
  if (!s) {
    bytes_ -= returned_.begin()->second.payload().size();
    returned_.erase(returned_.begin());
    return;
  }
  if (s != &messages_) {
    --upper_count_;
    bytes_ -= s->pop();
    return;
  }
  pop_first_level();
}

void Queue::store_leveled(const MessageMeta& meta, Bytes payload, Bytes headers) {
  const std::uint8_t level = std::min<std::uint8_t>(meta.priority, levels() - 1);
  MessageStore* s = &messages_;
  if (level != 0) {
    if (upper_.size() < level) upper_.resize(level);
    auto& u = upper_[level - 1];
    if (!u) u = std::make_unique<MessageStore>(messages_.budget());
    s = u.get();
  }
  if (level == meta.priority) {
    s->push(meta, payload, headers);
  } else {
    MessageMeta m = meta;
    m.priority = level;
    s->push(m, payload, headers);
  }
  if (level != 0) ++upper_count_;
  bytes_ += payload.size();
  if (meta.expires != Clock::time_point{}) ++expiring_;
  if (inbox_) add_to_share(meta.sender.uid, payload.size());
}

}  // namespace qbus::broker
