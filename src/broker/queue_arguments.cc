#include "broker/queue_arguments.h"

#include <array>
#include <optional>
#include <string_view>

namespace hamq::broker {
namespace {

using amqp::FieldValue;
using amqp::ProtocolError;
using amqp::ReplyCode;

// Ten years in milliseconds: RabbitMQ's ceiling for TTLs and expiries.
constexpr int64_t duration_ms_max = 315'360'000'000;
// The most message keys a queue's deduplication window holds (each is kept in memory and in
// every snapshot of the queue).
constexpr int64_t dedup_messages_max = 10'000'000;

class Checker {
 public:
  Checker(const amqp::FieldTable& arguments, const QueueProperties& queue)
      : arguments_(arguments), queue_(queue) {}

  std::optional<ProtocolError> integer(std::string_view name, int64_t min, int64_t max) const {
    const FieldValue* value = arguments_.find(name);
    if (value == nullptr) return std::nullopt;
    auto number = value->as_integer();
    if (!number)
      return invalid(name, "{unacceptable_type," + std::string(rabbitmq_type_name(*value)) + "}");
    if (*number < 0 && min >= 0)
      return invalid(name, "{value_negative," + std::to_string(*number) + "}");
    if (*number == 0 && min > 0) return invalid(name, "{value_zero,0}");
    if (*number > max) {
      return invalid(
          name, "{value_too_large," + std::to_string(*number) + "," + std::to_string(max) + "}");
    }
    return std::nullopt;
  }

  std::optional<ProtocolError> string(std::string_view name,
                                      std::initializer_list<std::string_view> allowed = {}) const {
    const FieldValue* value = arguments_.find(name);
    if (value == nullptr) return std::nullopt;
    const auto* text = std::get_if<std::string>(&value->value);
    if (text == nullptr) {
      return invalid(name, "{unacceptable_type," + std::string(rabbitmq_type_name(*value)) + "}");
    }
    if (allowed.size() == 0) return std::nullopt;
    for (std::string_view option : allowed) {
      if (*text == option) return std::nullopt;
    }
    return invalid(name, "{unknown_value,<<\"" + *text + "\">>}");
  }

  std::optional<ProtocolError> boolean(std::string_view name) const {
    const FieldValue* value = arguments_.find(name);
    if (value == nullptr || std::holds_alternative<bool>(value->value)) return std::nullopt;
    return invalid(name, "{unacceptable_type," + std::string(rabbitmq_type_name(*value)) + "}");
  }

  ProtocolError invalid(std::string_view name, const std::string& reason) const {
    return ProtocolError{ReplyCode::precondition_failed,
                         "invalid arg '" + std::string(name) + "' for " + where() + ": " + reason};
  }

  std::string where() const {
    return "queue '" + queue_.name + "' in vhost '" + queue_.virtual_host + "'";
  }

  bool has(std::string_view name) const { return arguments_.find(name) != nullptr; }

 private:
  const amqp::FieldTable& arguments_;
  const QueueProperties& queue_;
};

}  // namespace

std::string_view rabbitmq_type_name(const FieldValue& value) {
  switch (value.tag()) {
    case 't':
      return "bool";
    case 'b':
      return "byte";
    case 'B':
      return "unsignedbyte";
    case 's':
      return "short";
    case 'u':
      return "unsignedshort";
    case 'I':
      return "signedint";
    case 'i':
      return "unsignedint";
    case 'l':
      return "long";
    case 'f':
      return "float";
    case 'd':
      return "double";
    case 'D':
      return "decimal";
    case 'S':
      return "longstr";
    case 'x':
      return "binary";
    case 'A':
      return "array";
    case 'T':
      return "timestamp";
    case 'F':
      return "table";
    default:
      return "void";
  }
}

Result<void, ProtocolError> validate_queue_arguments(const amqp::FieldTable& arguments,
                                                     const QueueProperties& queue) {
  Checker check(arguments, queue);
  const std::optional<ProtocolError> problems[] = {
      check.string("x-queue-type", {"classic", "quorum"}),
      check.integer("x-message-ttl", 0, duration_ms_max),
      check.integer("x-expires", 1, duration_ms_max),
      check.integer("x-max-length", 0, INT64_MAX),
      check.integer("x-max-length-bytes", 0, INT64_MAX),
      check.string("x-overflow", {"drop-head", "reject-publish", "reject-publish-dlx"}),
      check.string("x-dead-letter-exchange"),
      check.string("x-dead-letter-routing-key"),
      check.integer("x-max-priority", 0, 255),
      check.boolean("x-single-active-consumer"),
      check.string("x-dead-letter-strategy", {"at-most-once", "at-least-once"}),
      check.integer("x-quorum-initial-group-size", 1, 255),
      check.integer("x-message-deduplication", 1, duration_ms_max),
      check.integer("x-message-deduplication-messages", 1, dedup_messages_max),
  };
  for (const auto& problem : problems) {
    if (problem) return unexpected(*problem);
  }
  if (check.has("x-dead-letter-routing-key") && !check.has("x-dead-letter-exchange")) {
    return unexpected(check.invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined"));
  }
  const FieldValue* type = arguments.find("x-queue-type");
  if (type != nullptr && *type == FieldValue("quorum")) {
    // Quorum queues are durable, shared and long-lived (reference §11.4).
    const char* property = !queue.durable      ? "non-durable"
                           : queue.exclusive   ? "exclusive-owner"
                           : queue.auto_delete ? "auto-delete"
                                               : nullptr;
    if (property != nullptr) {
      return unexpected(
          ProtocolError{ReplyCode::precondition_failed,
                        "invalid property '" + std::string(property) + "' for " + check.where()});
    }
  }
  return Ok{};
}

}  // namespace hamq::broker
