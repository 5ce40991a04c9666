// Definitions: the broker model that every node of a cluster shares: exchanges, queues (durable
// ones with the Raft group that holds each; transient and exclusive ones with their home node)
// and bindings. Every change is a MetadataCommand in the metadata group's log; the broker applies
// it in log order to its virtual hosts, with RabbitMQ's equivalence checks (Broker::
// apply_definition), so every node reaches the same model and the same verdicts. The log's
// format is docs/formats/metadata.md.
//
// decode_metadata_command() never trusts its input; Definitions::apply() accepts any decoded
// command (a delete of something absent changes nothing): it is the model of a snapshot.
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
  bool durable = true;
  uint64_t home = 0;  // a transient one's: the node that declared it (it goes when that restarts)
  // A durable delayed exchange's: the nodes holding its group, placed when the declare is applied
  // as a durable queue's are; empty in a proposed declare. Empty in what was written before
  // version 4: the group is on `home` alone.
  std::vector<uint64_t> members = {};
  bool operator==(const ExchangeDefinition&) const = default;
};

struct QueueDefinition {
  std::string vhost;
  std::string name;
  // The Raft group holding a durable queue's messages. 0 in a proposed declare: the group is
  // named after the declare's entry (queue_group_of), the same on every node.
  uint64_t group = 0;
  bool auto_delete = false;
  amqp::FieldTable arguments;
  bool durable = true;
  uint64_t exclusive_owner = 0;  // the owning connection (node and counter); 0: not exclusive
  // The declaring node: a transient queue's node (it goes when that node restarts); a durable
  // queue's group has a member there when it can.
  uint64_t home = 0;
  // The nodes holding a durable queue's group (its Raft members at its founding), placed when
  // the declare is applied (Broker::place_members); empty in a proposed declare. Empty in what
  // was written before version 3: the group is on `home` alone.
  std::vector<uint64_t> members;
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
  bool if_unused = false;
};
struct DeclareQueue {
  QueueDefinition queue;
  // The connection declaring it: an existing exclusive queue is only its owner's.
  uint64_t requester = 0;
};
struct DeleteQueue {
  std::string vhost;
  std::string name;
};
// requester: the connection binding (a queue exclusive to another cannot be bound).
struct Bind {
  BindingDefinition binding;
  uint64_t requester = 0;
};
struct Unbind {
  BindingDefinition binding;
  uint64_t requester = 0;
};

// Changes nothing: once a node has applied it, it has applied everything committed before it (a
// read through a node that may lag behind the leader waits for one).
struct Barrier {};

// A node of the cluster: named by its --node-name, reached at its cluster address. Ids are given
// by the metadata group in the order nodes joined (the seeds first, in their order) and never
// given twice: a forgotten node stays, marked, so that its id is not reused.
struct ClusterNode {
  uint64_t id = 0;
  std::string name;
  std::string host;
  uint16_t port = 0;
  bool forgotten = false;
  // The incarnation of its log as it last recorded it (SetNodeIncarnation); 0: never.
  uint64_t incarnation = 0;
  bool operator==(const ClusterNode&) const = default;
};
// A node joins (id 0: the apply gives it the next id) or, in a snapshot, is (with its id).
struct AddNode {
  ClusterNode node;
};
// A node leaves for good (hamqctl forget_cluster_node): its transient queues and exchanges, and
// the durable queues whose log only it held, go with it.
struct ForgetNode {
  std::string name;
};

// A node records the incarnation of its log (NodeIdentity) once it has caught up at a start. A
// node that starts on an empty log and finds an older one recorded has lost its disk: it may
// have held entries of its queues' groups and voted in them, so it joins them rather than
// founding them anew (Broker::found_missing_groups). Never lowered.
struct SetNodeIncarnation {
  uint64_t node = 0;
  uint64_t incarnation = 0;
};

// The nodes a durable queue's group is to have (hamqctl add_member, delete_member, grow,
// shrink; the repair of a queue that lost a node): each node that is new in it joins the group
// empty, and the group's leader changes its Raft configuration one member at a time until it is
// these (NodeLog::reconcile_queue_members). A node left out keeps its replica until its group
// has removed it. `expected`: the members the change was made from; refused if they changed
// meanwhile (two changes made at once do not undo each other).
struct SetQueueMembers {
  std::string vhost;
  std::string name;
  std::vector<uint64_t> members;
  std::vector<uint64_t> expected;
};

using MetadataCommand =
    std::variant<DeclareExchange, DeleteExchange, DeclareQueue, DeleteQueue, Bind, Unbind, Barrier,
                 AddNode, ForgetNode, SetQueueMembers, SetNodeIncarnation>;

// The id the next node to join gets: above every id given so far.
uint64_t next_node_id(const std::map<uint64_t, ClusterNode>& nodes);

// The group a durable queue (or delayed exchange) declared by the metadata entry at `index` gets:
// named by the entry, so every node names it alike. Above the ids of groups made before (a
// counter from 2), which entries and snapshots still carry.
inline constexpr uint64_t queue_group_base = uint64_t{1} << 32;
inline uint64_t queue_group_of(uint64_t metadata_index) {
  return queue_group_base + metadata_index;
}

std::string encode_metadata_command(const MetadataCommand& command);
Result<MetadataCommand, std::string> decode_metadata_command(std::string_view bytes);

class Definitions {
 public:
  using Key = std::pair<std::string, std::string>;  // (vhost, name)

  void apply(const MetadataCommand& command);

  const std::map<Key, ExchangeDefinition>& exchanges() const { return exchanges_; }
  const std::map<Key, QueueDefinition>& queues() const { return queues_; }
  const std::vector<BindingDefinition>& bindings() const { return bindings_; }
  // By id, forgotten ones too.
  const std::map<uint64_t, ClusterNode>& nodes() const { return nodes_; }

  // The whole state as the metadata group's snapshot: the commands that rebuild it.
  std::string snapshot() const;
  static Result<Definitions, std::string> from_snapshot(std::string_view bytes);
  // The commands of a snapshot, in the order that rebuilds it.
  static Result<std::vector<MetadataCommand>, std::string> snapshot_commands(
      std::string_view bytes);
  static std::string snapshot_of(const std::vector<MetadataCommand>& commands);

  bool operator==(const Definitions&) const = default;

 private:
  std::map<Key, ExchangeDefinition> exchanges_;
  std::map<Key, QueueDefinition> queues_;
  std::vector<BindingDefinition> bindings_;  // in the order they were made
  std::map<uint64_t, ClusterNode> nodes_;
};

}  // namespace hamq::broker
