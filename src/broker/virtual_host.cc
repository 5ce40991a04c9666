#include "broker/virtual_host.h"

#include <algorithm>

#include "broker/matching.h"
#include "broker/queue_arguments.h"

namespace hamq::broker {

using amqp::ReplyCode;

namespace {

ProtocolError error(ReplyCode code, std::string text) {
  return ProtocolError{code, std::move(text)};
}

std::string quoted_bool(bool value) {
  return value ? "'true'" : "'false'";
}

std::string describe(const amqp::FieldValue* value) {
  if (value == nullptr) return "none";
  std::string text;
  if (auto integer = value->as_integer()) {
    text = std::to_string(*integer);
  } else if (auto* s = std::get_if<std::string>(&value->value)) {
    text = *s;
  } else if (auto* b = std::get_if<bool>(&value->value)) {
    text = *b ? "true" : "false";
  } else {
    text = "...";
  }
  return "the value '" + text + "' of type '" + std::string(rabbitmq_type_name(*value)) + "'";
}

// Arguments whose value decides how a queue behaves: a redeclare must repeat them exactly.
constexpr std::string_view equivalence_checked_queue_arguments[] = {
    "x-queue-type",
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-priority",
    "x-single-active-consumer",
    "x-delivery-limit",
    "x-dead-letter-strategy",
    "x-message-deduplication",
    "x-message-deduplication-messages",
};

bool argument_equivalent(const amqp::FieldValue* a, const amqp::FieldValue* b) {
  if (a == nullptr || b == nullptr) return a == b;
  return field_values_equivalent(*a, *b);
}

queue::QueueOptions queue_options(const amqp::FieldTable& arguments) {
  queue::QueueOptions options;
  // validate_queue_arguments has checked the types and ranges.
  if (const auto* priority = arguments.find("x-max-priority")) {
    options.max_priority = static_cast<uint8_t>(priority->as_integer().value_or(0));
  }
  if (const auto* single = arguments.find("x-single-active-consumer")) {
    options.single_active_consumer = *single == amqp::FieldValue(true);
  }
  if (const auto* length = arguments.find("x-max-length")) {
    options.max_length = static_cast<uint64_t>(length->as_integer().value_or(0));
  }
  if (const auto* bytes = arguments.find("x-max-length-bytes")) {
    options.max_length_bytes = static_cast<uint64_t>(bytes->as_integer().value_or(0));
  }
  if (const auto* overflow = arguments.find("x-overflow")) {
    if (*overflow == amqp::FieldValue("reject-publish")) {
      options.overflow = queue::Overflow::reject_publish;
    } else if (*overflow == amqp::FieldValue("reject-publish-dlx")) {
      options.overflow = queue::Overflow::reject_publish_dlx;
    }
  }
  options.dead_letters = arguments.find("x-dead-letter-exchange") != nullptr;
  if (const auto* ttl = arguments.find("x-message-ttl")) {
    options.message_ttl_ms = static_cast<uint64_t>(ttl->as_integer().value_or(0));
  }
  if (const auto* window = arguments.find("x-message-deduplication")) {
    options.dedup_window_ms = static_cast<uint64_t>(window->as_integer().value_or(1));
  }
  if (const auto* count = arguments.find("x-message-deduplication-messages")) {
    options.dedup_window_messages = static_cast<uint64_t>(count->as_integer().value_or(1));
  }
  // x-delivery-limit is not type-checked, as in RabbitMQ: a non-integer means the default, which
  // is 20 for quorum queues (4.0 and later) and none otherwise; a negative one, no limit.
  const auto* type = arguments.find("x-queue-type");
  bool quorum = type != nullptr && *type == amqp::FieldValue("quorum");
  std::optional<int64_t> limit;
  if (const auto* given = arguments.find("x-delivery-limit")) limit = given->as_integer();
  if (!limit && quorum) limit = quorum_delivery_limit_default;
  if (limit && *limit >= 0) {
    options.delivery_limit = static_cast<uint32_t>(std::min<int64_t>(*limit, UINT32_MAX));
  }
  return options;
}

}  // namespace

std::optional<uint64_t> message_delay_ms(const amqp::BasicProperties& properties) {
  if (!properties.headers) return std::nullopt;
  const amqp::FieldValue* header = properties.headers->find("x-delay");
  if (header == nullptr || std::holds_alternative<int8_t>(header->value)) return std::nullopt;
  std::optional<int64_t> delay = header->as_integer();
  if (const auto* f = std::get_if<float>(&header->value)) delay = static_cast<int64_t>(*f);
  if (const auto* d = std::get_if<double>(&header->value)) {
    if (*d > -1e18 && *d < 1e18) delay = static_cast<int64_t>(*d);
  }
  if (const auto* text = std::get_if<std::string>(&header->value)) {
    std::string_view digits = *text;
    bool negative = !digits.empty() && digits[0] == '-';
    if (negative) digits.remove_prefix(1);
    if (!digits.empty() && digits.size() <= 18 &&
        digits.find_first_not_of("0123456789") == std::string_view::npos) {
      int64_t value = 0;
      for (char c : digits) value = value * 10 + (c - '0');
      delay = negative ? -value : value;
    }
  }
  if (!delay || *delay <= 0 || *delay > int64_t{UINT32_MAX}) return std::nullopt;
  return static_cast<uint64_t>(*delay);
}

std::optional<ExchangeType> parse_exchange_type(std::string_view name) {
  if (name == "direct") return ExchangeType::direct;
  if (name == "fanout") return ExchangeType::fanout;
  if (name == "topic") return ExchangeType::topic;
  if (name == "headers") return ExchangeType::headers;
  return std::nullopt;
}

std::string_view exchange_type_name(ExchangeType type) {
  switch (type) {
    case ExchangeType::direct:
      return "direct";
    case ExchangeType::fanout:
      return "fanout";
    case ExchangeType::topic:
      return "topic";
    case ExchangeType::headers:
      return "headers";
  }
  return "direct";
}

std::optional<std::string> Exchange::alternate_exchange() const {
  const amqp::FieldValue* value = arguments.find("alternate-exchange");
  if (value == nullptr) return std::nullopt;
  if (auto* s = std::get_if<std::string>(&value->value)) return *s;
  return std::nullopt;
}

VirtualHost::VirtualHost(std::string name, uint64_t* memory_counter)
    : name_(std::move(name)), memory_counter_(memory_counter) {
  declare_predefined("", ExchangeType::direct);
  declare_predefined("amq.direct", ExchangeType::direct);
  declare_predefined("amq.fanout", ExchangeType::fanout);
  declare_predefined("amq.topic", ExchangeType::topic);
  declare_predefined("amq.headers", ExchangeType::headers);
  declare_predefined("amq.match", ExchangeType::headers);
  declare_predefined("amq.rabbitmq.trace", ExchangeType::topic);
  exchanges_["amq.rabbitmq.trace"].internal = true;
}

void VirtualHost::declare_predefined(std::string name, ExchangeType type) {
  Exchange exchange;
  exchange.name = name;
  exchange.type = type;
  exchange.durable = true;
  exchanges_.emplace(std::move(name), std::move(exchange));
}

std::string VirtualHost::in_vhost(std::string_view kind, const std::string& name) const {
  return std::string(kind) + " '" + name + "' in vhost '" + name_ + "'";
}

const Exchange* VirtualHost::find_exchange(const std::string& name) const {
  auto it = exchanges_.find(name);
  return it == exchanges_.end() ? nullptr : &it->second;
}

Exchange* VirtualHost::find_exchange(const std::string& name) {
  auto it = exchanges_.find(name);
  return it == exchanges_.end() ? nullptr : &it->second;
}

bool VirtualHost::has_binding(const std::string& source, const Binding& binding) const {
  const Exchange* exchange = find_exchange(source);
  if (exchange == nullptr) return false;
  return std::find(exchange->bindings.begin(), exchange->bindings.end(), binding) !=
         exchange->bindings.end();
}

Result<void, ProtocolError> VirtualHost::declare_exchange(const ExchangeDeclare& declare) {
  if (declare.name.empty()) {
    return unexpected(
        error(ReplyCode::access_refused, "operation not permitted on the default exchange"));
  }
  auto it = exchanges_.find(declare.name);
  if (declare.passive) {
    if (it == exchanges_.end()) {
      return unexpected(error(ReplyCode::not_found, "no " + in_vhost("exchange", declare.name)));
    }
    return Ok{};
  }
  bool delayed = declare.type == delayed_exchange_type;
  std::optional<ExchangeType> type;
  if (delayed) {
    // The plugin's rule and words (reference §16).
    const amqp::FieldValue* routing = declare.arguments.find("x-delayed-type");
    const auto* name = routing != nullptr ? std::get_if<std::string>(&routing->value) : nullptr;
    if (name != nullptr) type = parse_exchange_type(*name);
    if (!type) {
      return unexpected(error(ReplyCode::precondition_failed,
                              "Invalid argument, 'x-delayed-type' must be an existing exchange "
                              "type"));
    }
  } else {
    type = parse_exchange_type(declare.type);
  }
  if (!type) {
    return unexpected(
        error(ReplyCode::command_invalid, "unknown exchange type '" + declare.type + "'"));
  }
  const amqp::FieldValue* alternate = declare.arguments.find("alternate-exchange");
  if (alternate != nullptr && !std::holds_alternative<std::string>(alternate->value)) {
    return unexpected(error(ReplyCode::precondition_failed,
                            "invalid arg 'alternate-exchange' for " +
                                in_vhost("exchange", declare.name) + ": expected a long string"));
  }
  if (it == exchanges_.end()) {
    if (declare.name.starts_with("amq.")) {
      return unexpected(error(ReplyCode::access_refused, "exchange name '" + declare.name +
                                                             "' contains reserved prefix 'amq.*'"));
    }
    Exchange exchange;
    exchange.name = declare.name;
    exchange.type = *type;
    exchange.durable = declare.durable;
    exchange.auto_delete = declare.auto_delete;
    exchange.internal = declare.internal;
    exchange.arguments = declare.arguments;
    if (delayed) {
      exchange.delayed = true;
      // Each message expires from it after its own delay; the broker routes what expires.
      exchange.delay_queue = std::make_shared<Queue>(queue::QueueOptions{.dead_letters = true});
      exchange.delay_queue->machine.set_memory_counter(memory_counter_);
      exchange.delay_queue->name = "delayed messages of exchange '" + declare.name + "'";
      exchange.delay_queue->vhost = this;
      exchange.delay_queue->delayed_exchange = declare.name;
    }
    exchanges_.emplace(declare.name, std::move(exchange));
    return Ok{};
  }
  const Exchange& existing = it->second;
  auto inequivalent = [&](std::string_view arg, std::string received, std::string current) {
    return unexpected(error(ReplyCode::precondition_failed,
                            "inequivalent arg '" + std::string(arg) + "' for " +
                                in_vhost("exchange", declare.name) + ": received " + received +
                                " but current is " + current));
  };
  if (existing.type != *type || existing.delayed != delayed) {
    std::string current(existing.delayed ? delayed_exchange_type
                                         : exchange_type_name(existing.type));
    return inequivalent("type", "'" + declare.type + "'", "'" + current + "'");
  }
  if (existing.durable != declare.durable) {
    return inequivalent("durable", quoted_bool(declare.durable), quoted_bool(existing.durable));
  }
  if (existing.auto_delete != declare.auto_delete) {
    return inequivalent("auto_delete", quoted_bool(declare.auto_delete),
                        quoted_bool(existing.auto_delete));
  }
  if (existing.internal != declare.internal) {
    return inequivalent("internal", quoted_bool(declare.internal), quoted_bool(existing.internal));
  }
  const amqp::FieldValue* current_alternate = existing.arguments.find("alternate-exchange");
  if (!argument_equivalent(alternate, current_alternate)) {
    return inequivalent("alternate-exchange", describe(alternate), describe(current_alternate));
  }
  return Ok{};
}

Result<void, ProtocolError> VirtualHost::delete_exchange(const std::string& name, bool if_unused) {
  if (name.empty()) {
    return unexpected(
        error(ReplyCode::access_refused, "operation not permitted on the default exchange"));
  }
  if (name.starts_with("amq.")) {
    return unexpected(error(ReplyCode::access_refused,
                            "deletion of system " + in_vhost("exchange", name) + " not allowed"));
  }
  auto it = exchanges_.find(name);
  if (it == exchanges_.end()) return Ok{};
  if (if_unused && !it->second.bindings.empty()) {
    return unexpected(
        error(ReplyCode::precondition_failed, in_vhost("exchange", name) + " in use"));
  }
  exchanges_.erase(it);
  remove_bindings_to(name, /*is_queue=*/false);
  return Ok{};
}

Result<QueuePtr, ProtocolError> VirtualHost::declare_queue(const QueueDeclare& declare,
                                                           ConnectionId owner) {
  auto it = queues_.find(declare.name);
  if (it == queues_.end()) {
    if (declare.passive) {
      return unexpected(error(ReplyCode::not_found, "no " + in_vhost("queue", declare.name)));
    }
    auto valid = validate_queue_arguments(
        declare.arguments,
        {declare.name, name_, declare.durable, declare.exclusive, declare.auto_delete});
    if (!valid.ok()) return unexpected(valid.error());
    auto queue = std::make_shared<Queue>(queue_options(declare.arguments));
    queue->machine.set_memory_counter(memory_counter_);
    queue->name = declare.name;
    queue->vhost = this;
    if (const auto* expires = declare.arguments.find("x-expires")) {
      queue->expires_ms = static_cast<uint64_t>(expires->as_integer().value_or(0));
    }
    const auto* type = declare.arguments.find("x-queue-type");
    queue->delivery_count_header = queue->machine.options().delivery_limit.has_value() ||
                                   (type != nullptr && *type == amqp::FieldValue("quorum"));
    queue->durable = declare.durable && !declare.exclusive;
    queue->auto_delete = declare.auto_delete;
    queue->exclusive_owner = declare.exclusive ? owner : 0;
    queue->arguments = declare.arguments;
    queues_.emplace(declare.name, queue);
    return queue;
  }
  QueuePtr queue = it->second;
  // Exclusivity is checked before anything else (reference §11.1).
  if (queue->exclusive_owner != 0 &&
      (queue->exclusive_owner != owner || (!declare.passive && !declare.exclusive))) {
    return unexpected(error(
        ReplyCode::resource_locked,
        "cannot obtain exclusive access to locked " + in_vhost("queue", declare.name) +
            ". It could be originally declared on another connection or the exclusive property "
            "value does not match that of the original declaration."));
  }
  if (declare.passive) return queue;
  auto inequivalent = [&](std::string_view arg, std::string received, std::string current) {
    return unexpected(
        error(ReplyCode::precondition_failed, "inequivalent arg '" + std::string(arg) + "' for " +
                                                  in_vhost("queue", declare.name) + ": received " +
                                                  received + " but current is " + current));
  };
  bool durable = declare.durable && !declare.exclusive;
  if (queue->durable != durable) {
    return inequivalent("durable", quoted_bool(durable), quoted_bool(queue->durable));
  }
  if (queue->auto_delete != declare.auto_delete) {
    return inequivalent("auto_delete", quoted_bool(declare.auto_delete),
                        quoted_bool(queue->auto_delete));
  }
  if (declare.exclusive && queue->exclusive_owner == 0) {
    return inequivalent("exclusive", "'true'", "'false'");
  }
  for (std::string_view name : equivalence_checked_queue_arguments) {
    const amqp::FieldValue* received = declare.arguments.find(name);
    const amqp::FieldValue* current = queue->arguments.find(name);
    if (name == "x-queue-type") {
      // An absent type and "classic" are the same queue type.
      auto is_classic = [](const amqp::FieldValue* v) {
        return v == nullptr || *v == amqp::FieldValue("classic");
      };
      if (is_classic(received) && is_classic(current)) continue;
    }
    if (!argument_equivalent(received, current)) {
      return inequivalent(name, describe(received), describe(current));
    }
  }
  return queue;
}

Result<QueuePtr, ProtocolError> VirtualHost::use_queue(const std::string& name,
                                                       ConnectionId user) const {
  auto it = queues_.find(name);
  if (it == queues_.end()) {
    return unexpected(error(ReplyCode::not_found, "no " + in_vhost("queue", name)));
  }
  if (it->second->exclusive_owner != 0 && it->second->exclusive_owner != user) {
    return unexpected(error(ReplyCode::resource_locked,
                            "cannot obtain exclusive access to locked " + in_vhost("queue", name) +
                                ". It could be originally declared on another connection or the "
                                "exclusive property value does not match that of the original "
                                "declaration."));
  }
  return it->second;
}

QueuePtr VirtualHost::find_queue(const std::string& name) const {
  auto it = queues_.find(name);
  return it == queues_.end() ? nullptr : it->second;
}

QueuePtr VirtualHost::remove_queue(const std::string& name) {
  auto it = queues_.find(name);
  if (it == queues_.end()) return nullptr;
  QueuePtr queue = std::move(it->second);
  queues_.erase(it);
  remove_bindings_to(name, /*is_queue=*/true);
  return queue;
}

void VirtualHost::remove_bindings_to(const std::string& destination, bool is_queue) {
  std::vector<std::string> emptied;
  for (auto& [name, exchange] : exchanges_) {
    auto& bindings = exchange.bindings;
    size_t before = bindings.size();
    std::erase_if(bindings, [&](const Binding& b) {
      return b.destination == destination && b.destination_is_queue == is_queue;
    });
    if (bindings.size() != before && bindings.empty()) emptied.push_back(name);
  }
  for (const auto& name : emptied) auto_delete_if_unbound(name);
}

void VirtualHost::auto_delete_if_unbound(const std::string& name) {
  auto it = exchanges_.find(name);
  if (it == exchanges_.end() || !it->second.auto_delete || !it->second.bindings.empty()) return;
  exchanges_.erase(it);
  remove_bindings_to(name, /*is_queue=*/false);
}

Result<std::map<std::string, Exchange>::iterator, ProtocolError> VirtualHost::binding_source(
    const std::string& source, const Binding& binding, ConnectionId user) {
  if (source.empty() || (!binding.destination_is_queue && binding.destination.empty())) {
    return unexpected(
        error(ReplyCode::access_refused, "operation not permitted on the default exchange"));
  }
  auto it = exchanges_.find(source);
  if (it == exchanges_.end()) {
    return unexpected(error(ReplyCode::not_found, "no " + in_vhost("exchange", source)));
  }
  if (binding.destination_is_queue) {
    auto queue = use_queue(binding.destination, user);
    if (!queue.ok()) return unexpected(queue.error());
  } else if (exchanges_.find(binding.destination) == exchanges_.end()) {
    return unexpected(
        error(ReplyCode::not_found, "no " + in_vhost("exchange", binding.destination)));
  }
  return it;
}

Result<void, ProtocolError> VirtualHost::bind(const std::string& source, const Binding& binding,
                                              ConnectionId user) {
  auto ends = binding_source(source, binding, user);
  if (!ends.ok()) return unexpected(ends.error());
  auto it = ends.value();
  if (it->second.type == ExchangeType::headers && !headers_match_mode(binding.arguments)) {
    return unexpected(
        error(ReplyCode::precondition_failed,
              "invalid x-match field value for binding to " + in_vhost("exchange", source)));
  }
  auto& bindings = it->second.bindings;
  if (std::find(bindings.begin(), bindings.end(), binding) == bindings.end()) {
    bindings.push_back(binding);
  }
  return Ok{};
}

Result<void, ProtocolError> VirtualHost::unbind(const std::string& source, const Binding& binding,
                                                ConnectionId user) {
  auto ends = binding_source(source, binding, user);
  if (!ends.ok()) {
    // Unbinding is idempotent: with its source or destination gone the binding is gone too,
    // and RabbitMQ 3.x answers unbind-ok (aio-pika's RPC pattern unbinds after an auto-delete).
    if (ends.error().code == ReplyCode::not_found) return Ok{};
    return unexpected(ends.error());
  }
  auto it = ends.value();
  auto& bindings = it->second.bindings;
  auto found = std::find(bindings.begin(), bindings.end(), binding);
  if (found != bindings.end()) {
    bindings.erase(found);
    if (bindings.empty()) auto_delete_if_unbound(source);
  }
  return Ok{};
}

std::vector<std::string> VirtualHost::queues_owned_by(ConnectionId owner) const {
  std::vector<std::string> names;
  for (const auto& [name, queue] : queues_) {
    if (queue->exclusive_owner == owner) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<QueuePtr> VirtualHost::route(const std::string& exchange,
                                         const std::string& routing_key,
                                         const std::vector<std::string>& extra_keys,
                                         const amqp::FieldTable* headers) const {
  std::vector<QueuePtr> out;
  const Exchange* start = find_exchange(exchange);
  if (start == nullptr) return out;
  std::vector<const Exchange*> visited;
  route_through(*start, routing_key, extra_keys, headers, visited, out);
  return out;
}

void VirtualHost::route_through(const Exchange& exchange, const std::string& routing_key,
                                const std::vector<std::string>& extra_keys,
                                const amqp::FieldTable* headers,
                                std::vector<const Exchange*>& visited,
                                std::vector<QueuePtr>& out) const {
  if (std::find(visited.begin(), visited.end(), &exchange) != visited.end()) return;
  visited.push_back(&exchange);
  size_t routed_before = out.size();
  auto add_queue = [&](const std::string& name) {
    auto it = queues_.find(name);
    if (it == queues_.end()) return;
    if (std::find(out.begin(), out.end(), it->second) == out.end()) out.push_back(it->second);
  };
  auto key_matches = [&](const Binding& binding) {
    auto one = [&](const std::string& key) {
      switch (exchange.type) {
        case ExchangeType::direct:
          return binding.key == key;
        case ExchangeType::topic:
          return topic_matches(binding.key, key);
        case ExchangeType::fanout:
          return true;
        case ExchangeType::headers:
          return headers_match(binding.arguments, headers);
      }
      return false;
    };
    if (one(routing_key)) return true;
    return std::any_of(extra_keys.begin(), extra_keys.end(), one);
  };
  if (exchange.name.empty()) {
    // The default exchange: every queue is bound to it under its own name.
    add_queue(routing_key);
    for (const auto& key : extra_keys) add_queue(key);
  }
  for (const Binding& binding : exchange.bindings) {
    if (!key_matches(binding)) continue;
    if (binding.destination_is_queue) {
      add_queue(binding.destination);
    } else if (const Exchange* next = find_exchange(binding.destination)) {
      route_through(*next, routing_key, extra_keys, headers, visited, out);
    }
  }
  if (out.size() == routed_before) {
    if (auto alternate = exchange.alternate_exchange()) {
      if (const Exchange* next = find_exchange(*alternate)) {
        route_through(*next, routing_key, extra_keys, headers, visited, out);
      }
    }
  }
}

}  // namespace hamq::broker
