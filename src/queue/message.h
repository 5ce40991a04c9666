// Message: what a publisher sent, immutable once published, shared by every queue it was routed
// to (a fanout to ten queues holds one copy).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "amqp/methods.gen.h"

namespace hamq::queue {

struct Message {
  std::string exchange;
  std::string routing_key;
  amqp::BasicProperties properties;
  std::string body;
};

using MessagePtr = std::shared_ptr<const Message>;

}  // namespace hamq::queue
