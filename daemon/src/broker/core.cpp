#include "broker/core.hpp"

namespace qbus::broker {

SendOutcome rejected(Errc code, std::string text) {
  return SendOutcome{SendResult::rejected, code, std::move(text)};
}

SendOutcome unknown_peer() {
  return rejected(Errc::internal_error, "unknown peer");
}

SendOutcome Core::quota_refusal(std::uint32_t uid, const UidUsage& usage, std::size_t bytes) const {
  if (usage.queued_bytes + bytes > limits.uid_max_queued_bytes) {
    return rejected(Errc::quota_exceeded, "uid " + std::to_string(uid) + " already has " +
                                              std::to_string(usage.queued_bytes) +
                                              " bytes queued (limit " +
                                              std::to_string(limits.uid_max_queued_bytes) + ")");
  }
  return rejected(Errc::quota_exceeded, "uid " + std::to_string(uid) + " already has " +
                                            std::to_string(usage.queued_messages) +
                                            " messages queued (limit " +
                                            std::to_string(limits.uid_max_queued_messages) + ")");
}

}  // namespace qbus::broker
