#include "broker/dead_letter.h"

#include <algorithm>

namespace hamq::broker {

using amqp::FieldArray;
using amqp::FieldTable;
using amqp::FieldValue;

namespace {

const std::string* string_field(const FieldTable& table, std::string_view key) {
  const FieldValue* value = table.find(key);
  return value == nullptr ? nullptr : std::get_if<std::string>(&value->value);
}

void set_field(FieldTable& table, const std::string& key, FieldValue value) {
  for (auto& entry : table.entries) {
    if (entry.name == key) {
      entry.value = std::move(value);
      return;
    }
  }
  table.entries.emplace_back(key, std::move(value));
}

std::vector<std::string> cc_keys(const amqp::BasicProperties& properties) {
  std::vector<std::string> keys;
  if (!properties.headers) return keys;
  const FieldValue* cc = properties.headers->find("CC");
  if (cc == nullptr) return keys;
  if (const auto* array = std::get_if<FieldArray>(&cc->value)) {
    for (const auto& key : array->values) {
      if (const auto* text = std::get_if<std::string>(&key.value)) keys.push_back(*text);
    }
  }
  return keys;
}

}  // namespace

DeadLetterRoute make_dead_letter(const queue::Message& message, const std::string& queue_name,
                                 queue::DeadLetterReason reason, const std::string& exchange,
                                 const std::optional<std::string>& routing_key,
                                 uint64_t time_seconds) {
  auto dead = std::make_shared<queue::Message>(message);
  amqp::BasicProperties& properties = dead->properties;
  FieldTable& headers = properties.headers ? *properties.headers : properties.headers.emplace();
  std::string reason_name(queue::dead_letter_reason_name(reason));
  std::vector<std::string> original_keys = {message.routing_key};
  for (auto& key : cc_keys(message.properties)) original_keys.push_back(std::move(key));

  FieldArray deaths;
  if (const FieldValue* existing = headers.find("x-death")) {
    if (const auto* array = std::get_if<FieldArray>(&existing->value)) deaths = *array;
  }
  auto same = std::find_if(deaths.values.begin(), deaths.values.end(), [&](const FieldValue& v) {
    const auto* entry = std::get_if<FieldTable>(&v.value);
    if (entry == nullptr) return false;
    const std::string* q = string_field(*entry, "queue");
    const std::string* r = string_field(*entry, "reason");
    return q != nullptr && r != nullptr && *q == queue_name && *r == reason_name;
  });
  if (same != deaths.values.end()) {
    FieldTable entry = std::get<FieldTable>(same->value);
    int64_t count = entry.find("count") ? entry.find("count")->as_integer().value_or(0) : 0;
    set_field(entry, "count", int64_t{count + 1});
    deaths.values.erase(same);
    deaths.values.insert(deaths.values.begin(), FieldValue(std::move(entry)));
  } else {
    FieldTable entry;
    if (properties.expiration)
      entry.entries.emplace_back("original-expiration", *properties.expiration);
    entry.entries.emplace_back("count", int64_t{1});
    entry.entries.emplace_back("reason", reason_name);
    entry.entries.emplace_back("queue", queue_name);
    entry.entries.emplace_back("time", amqp::Timestamp{time_seconds});
    entry.entries.emplace_back("exchange", message.exchange);
    FieldArray keys;
    for (const auto& key : original_keys) keys.values.emplace_back(key);
    entry.entries.emplace_back("routing-keys", std::move(keys));
    deaths.values.insert(deaths.values.begin(), FieldValue(std::move(entry)));
  }
  set_field(headers, "x-death", std::move(deaths));
  if (headers.find("x-first-death-queue") == nullptr) {
    set_field(headers, "x-first-death-queue", queue_name);
    set_field(headers, "x-first-death-reason", reason_name);
    set_field(headers, "x-first-death-exchange", message.exchange);
  }
  set_field(headers, "x-last-death-queue", queue_name);
  set_field(headers, "x-last-death-reason", reason_name);
  set_field(headers, "x-last-death-exchange", message.exchange);
  // A dead letter must not expire again where it lands (reference §12).
  properties.expiration.reset();

  DeadLetterRoute route;
  if (routing_key) {
    route.routing_key = *routing_key;
    std::erase_if(headers.entries, [](const amqp::FieldTableEntry& e) { return e.name == "CC"; });
  } else {
    route.routing_key = message.routing_key;
    route.extra_keys.assign(original_keys.begin() + 1, original_keys.end());
  }
  dead->exchange = exchange;
  dead->routing_key = route.routing_key;
  route.message = std::move(dead);
  return route;
}

bool dead_letter_cycle(const queue::Message& message, const std::string& target) {
  if (!message.properties.headers) return false;
  const FieldValue* deaths = message.properties.headers->find("x-death");
  const auto* array = deaths ? std::get_if<FieldArray>(&deaths->value) : nullptr;
  if (array == nullptr) return false;
  bool seen = false;
  for (const auto& value : array->values) {
    const auto* entry = std::get_if<FieldTable>(&value.value);
    if (entry == nullptr) continue;
    const std::string* reason = string_field(*entry, "reason");
    if (reason != nullptr && *reason == "rejected") return false;  // a consumer breaks the cycle
    const std::string* queue = string_field(*entry, "queue");
    if (queue != nullptr && *queue == target) seen = true;
  }
  return seen;
}

}  // namespace hamq::broker
