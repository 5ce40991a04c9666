// Validation of the queue arguments hamq knows (shared/reference/rabbitmq-extensions.md §11.2 and
// §11.4): a known argument of the wrong type or out of range is refused with 406 and RabbitMQ's
// reason text; arguments hamq does not know are accepted and kept.
#pragma once

#include <string>
#include <string_view>

#include "amqp/errors.h"
#include "amqp/field_table.h"
#include "common/result.h"

namespace hamq::broker {

struct QueueProperties {
  std::string name;
  std::string virtual_host;
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = false;
};

// RabbitMQ's name of a field value's type, as its error texts print it ("longstr", "long").
std::string_view rabbitmq_type_name(const amqp::FieldValue& value);

Result<void, amqp::ProtocolError> validate_queue_arguments(const amqp::FieldTable& arguments,
                                                           const QueueProperties& queue);

}  // namespace hamq::broker
