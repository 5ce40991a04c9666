// Dead-lettering (shared/reference/rabbitmq-extensions.md §13): the copy of a message that a
// queue sends to its dead-letter exchange, with the x-death history RabbitMQ builds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "queue/message.h"
#include "queue/queue_machine.h"

namespace hamq::broker {

struct DeadLetterRoute {
  queue::MessagePtr message;  // published to the dead-letter exchange
  std::string routing_key;
  std::vector<std::string> extra_keys;  // CC keys, when the original keys are kept
};

// The message as it leaves `queue_name` for `exchange`: its x-death entry for (queue, reason)
// added or counted (and moved to the front), x-first-death-* set once, x-last-death-* updated,
// its expiration moved into the entry, and its routing keys replaced by `routing_key` (dropping
// CC) when the queue has x-dead-letter-routing-key.
DeadLetterRoute make_dead_letter(const queue::Message& message, const std::string& queue_name,
                                 queue::DeadLetterReason reason, const std::string& exchange,
                                 const std::optional<std::string>& routing_key,
                                 uint64_t time_seconds);

// Whether dead-lettering into `target` closes a cycle with no rejection in it, in which case
// RabbitMQ drops the message rather than loop.
bool dead_letter_cycle(const queue::Message& message, const std::string& target);

}  // namespace hamq::broker
