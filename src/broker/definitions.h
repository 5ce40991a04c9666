// Definitions: what a node must remember of its broker model across a restart (and, in a
// cluster, share): durable exchanges, durable queues with the Raft group that holds each, and
// the bindings between durable things. It is the state machine of the metadata group: every
// change is a MetadataCommand in that group's log, applied here in log order.
//
// decode_metadata_command() never trusts its input; Definitions::apply() accepts any decoded
// command (a delete of something absent changes nothing).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "amqp/field_table.h"
#include "broker/virtual_host.h"
#include "common/result.h"

namespace hamq::broker {

struct ExchangeDefinition {
  std::string vhost;
  std::string name;
  std::string type;  // as declared: "direct", ..., "x-delayed-message"
  bool auto_delete = false;
  bool internal = false;
  amqp::FieldTable arguments;
  uint64_t group = 0;  // a delayed exchange's: the Raft group holding its delayed messages
  bool operator==(const ExchangeDefinition&) const = default;
};

struct QueueDefinition {
  std::string vhost;
  std::string name;
  uint64_t group = 0;  // the Raft group holding its messages
  bool auto_delete = false;
  amqp::FieldTable arguments;
  bool operator==(const QueueDefinition&) const = default;
};

struct BindingDefinition {
  std::string vhost;
  std::string source;
  Binding binding;
  bool operator==(const BindingDefinition&) const = default;
};

struct DeclareExchange {
  ExchangeDefinition exchange;
};
struct DeleteExchange {
  std::string vhost;
  std::string name;
};
struct DeclareQueue {
  QueueDefinition queue;
};
struct DeleteQueue {
  std::string vhost;
  std::string name;
};
struct Bind {
  BindingDefinition binding;
};
struct Unbind {
  BindingDefinition binding;
};

using MetadataCommand =
    std::variant<DeclareExchange, DeleteExchange, DeclareQueue, DeleteQueue, Bind, Unbind>;

std::string encode_metadata_command(const MetadataCommand& command);
Result<MetadataCommand, std::string> decode_metadata_command(std::string_view bytes);

class Definitions {
 public:
  using Key = std::pair<std::string, std::string>;  // (vhost, name)

  void apply(const MetadataCommand& command);

  const std::map<Key, ExchangeDefinition>& exchanges() const { return exchanges_; }
  const std::map<Key, QueueDefinition>& queues() const { return queues_; }
  const std::vector<BindingDefinition>& bindings() const { return bindings_; }

  // The whole state as the metadata group's snapshot: the commands that rebuild it.
  std::string snapshot() const;
  static Result<Definitions, std::string> from_snapshot(std::string_view bytes);

  bool operator==(const Definitions&) const = default;

 private:
  std::map<Key, ExchangeDefinition> exchanges_;
  std::map<Key, QueueDefinition> queues_;
  std::vector<BindingDefinition> bindings_;  // in the order they were made
};

}  // namespace hamq::broker
