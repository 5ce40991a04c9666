// Binding matchers of the topic and headers exchange types, as RabbitMQ matches
// (shared/reference/rabbitmq-extensions.md §10.3). Pure functions, no state.
#pragma once

#include <optional>
#include <string_view>

#include "amqp/field_table.h"

namespace hamq::broker {

// Topic: keys are words separated by '.', empty words kept, the empty key has no words. In a
// binding key a word '*' matches exactly one word and '#' zero or more. Runs in
// O(binding words x routing words), whatever the number of '#'.
bool topic_matches(std::string_view binding_key, std::string_view routing_key);

enum class HeadersMatch { all, any, all_with_x, any_with_x };

// The x-match argument of a headers binding: absent means all; a value other than the four
// strings is invalid (nullopt), which a bind refuses with 406.
std::optional<HeadersMatch> headers_match_mode(const amqp::FieldTable& binding_arguments);

// Whether a message's headers (nullptr when it has none) match a headers binding's arguments.
bool headers_match(const amqp::FieldTable& binding_arguments, const amqp::FieldTable* headers);

// Equality as the headers exchange sees it: integers of any width are equal when numerically
// equal, float and double compare as numbers, everything else by type and value.
bool field_values_equivalent(const amqp::FieldValue& a, const amqp::FieldValue& b);

}  // namespace hamq::broker
