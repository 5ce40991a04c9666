#include "broker/matching.h"

#include <vector>

namespace hamq::broker {
namespace {

std::vector<std::string_view> split_words(std::string_view key) {
  std::vector<std::string_view> words;
  if (key.empty()) return words;
  size_t start = 0;
  for (;;) {
    size_t dot = key.find('.', start);
    if (dot == std::string_view::npos) {
      words.push_back(key.substr(start));
      return words;
    }
    words.push_back(key.substr(start, dot - start));
    start = dot + 1;
  }
}

std::optional<double> as_number(const amqp::FieldValue& v) {
  if (auto* f = std::get_if<float>(&v.value)) return *f;
  if (auto* d = std::get_if<double>(&v.value)) return *d;
  return std::nullopt;
}

}  // namespace

bool topic_matches(std::string_view binding_key, std::string_view routing_key) {
  std::vector<std::string_view> pattern = split_words(binding_key);
  std::vector<std::string_view> words = split_words(routing_key);
  // matched[j]: the pattern's first i words match the routing key's first j words.
  std::vector<char> matched(words.size() + 1, 0);
  matched[0] = 1;
  for (std::string_view p : pattern) {
    std::vector<char> next(words.size() + 1, 0);
    if (p == "#") {
      // '#' extends any match by zero or more words.
      bool any = false;
      for (size_t j = 0; j <= words.size(); ++j) {
        any = any || matched[j];
        next[j] = any;
      }
    } else {
      for (size_t j = 1; j <= words.size(); ++j) {
        next[j] = matched[j - 1] && (p == "*" || p == words[j - 1]);
      }
    }
    matched.swap(next);
  }
  return matched[words.size()] != 0;
}

std::optional<HeadersMatch> headers_match_mode(const amqp::FieldTable& binding_arguments) {
  const amqp::FieldValue* mode = binding_arguments.find("x-match");
  if (mode == nullptr) return HeadersMatch::all;
  const auto* text = std::get_if<std::string>(&mode->value);
  if (text == nullptr) return std::nullopt;
  if (*text == "all") return HeadersMatch::all;
  if (*text == "any") return HeadersMatch::any;
  if (*text == "all-with-x") return HeadersMatch::all_with_x;
  if (*text == "any-with-x") return HeadersMatch::any_with_x;
  return std::nullopt;
}

bool field_values_equivalent(const amqp::FieldValue& a, const amqp::FieldValue& b) {
  auto ia = a.as_integer();
  auto ib = b.as_integer();
  if (ia || ib) return ia && ib && *ia == *ib;
  auto na = as_number(a);
  auto nb = as_number(b);
  if (na || nb) return na && nb && *na == *nb;
  return a == b;
}

bool headers_match(const amqp::FieldTable& binding_arguments, const amqp::FieldTable* headers) {
  auto mode = headers_match_mode(binding_arguments).value_or(HeadersMatch::all);
  bool with_x = mode == HeadersMatch::all_with_x || mode == HeadersMatch::any_with_x;
  bool all = mode == HeadersMatch::all || mode == HeadersMatch::all_with_x;
  for (const auto& [name, expected] : binding_arguments.entries) {
    if (name == "x-match") continue;
    if (!with_x && name.starts_with("x-")) continue;
    const amqp::FieldValue* actual = headers != nullptr ? headers->find(name) : nullptr;
    bool ok = actual != nullptr && (std::holds_alternative<amqp::Void>(expected.value) ||
                                    field_values_equivalent(expected, *actual));
    if (all && !ok) return false;
    if (!all && ok) return true;
  }
  return all;
}

}  // namespace hamq::broker
