// VirtualHost: the exchanges, queues and bindings of one vhost, and routing through them
// (shared/reference/rabbitmq-extensions.md §10 and §11). Pure: the channel calls it with the
// parsed method and gets the outcome or the ProtocolError to report.
//
// Thread: owned by one event loop.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "amqp/errors.h"
#include "amqp/field_table.h"
#include "common/result.h"
#include "queue/command.h"
#include "queue/queue_machine.h"

namespace hamq::broker {

using amqp::ProtocolError;

enum class ExchangeType { direct, fanout, topic, headers };

std::optional<ExchangeType> parse_exchange_type(std::string_view name);
std::string_view exchange_type_name(ExchangeType type);

// A binding from an exchange to a queue or to another exchange.
struct Binding {
  std::string destination;
  bool destination_is_queue = true;
  std::string key;
  amqp::FieldTable arguments;
  bool operator==(const Binding&) const = default;
};

class VirtualHost;

struct Queue;

// The exchange type of RabbitMQ's delayed-message plugin (reference §16): it routes as the type
// its x-delayed-type argument names, after holding each message for its x-delay header.
constexpr std::string_view delayed_exchange_type = "x-delayed-message";

struct Exchange {
  std::string name;
  ExchangeType type = ExchangeType::direct;  // how it routes (for a delayed one: x-delayed-type)
  // x-delayed-message: messages with a valid x-delay wait in `delay_queue` (internal, not in the
  // vhost's queues) and are routed when they expire from it.
  bool delayed = false;
  std::shared_ptr<Queue> delay_queue;
  bool durable = false;
  bool auto_delete = false;
  bool internal = false;
  uint64_t home = 0;  // a transient one's node (Definitions)
  amqp::FieldTable arguments;
  std::vector<Binding> bindings;

  std::optional<std::string> alternate_exchange() const;
};

// Who owns an exclusive queue: the connection's id (0: not exclusive).
using ConnectionId = uint64_t;

struct Queue;

// What a command on a queue did, once it did it; null effects: it was not done (the log refused
// it or failed, so nothing it would have changed is durable).
using CommandDone =
    std::function<void(const std::shared_ptr<Queue>&, const queue::CommandEffects*)>;

struct HandOver;

// Where the numbers of relayed pending commands start (Queue::pending_commands): above any of
// this node's own.
constexpr uint64_t relayed_command_key_base = uint64_t{1} << 62;

struct Queue {
  explicit Queue(queue::QueueOptions options) : machine(options) {}
  std::string name;
  VirtualHost* vhost = nullptr;  // where it lives, for dead-lettering
  bool durable = false;
  bool auto_delete = false;
  ConnectionId exclusive_owner = 0;
  uint64_t home = 0;              // the declaring node (Definitions)
  std::vector<uint64_t> members;  // the nodes holding a durable queue's group (Definitions)
  // Its members changed since its declare (SetQueueMembers) in what this node applied: they may
  // not be the group's founders (Broker::found_missing_groups).
  bool members_changed = false;
  bool deleting = false;  // its delete is proposed (Broker::propose_queue_delete)
  amqp::FieldTable arguments;
  queue::QueueMachine machine;
  // The Raft group whose log holds the queue's commands (a durable queue on a node with a
  // store); 0: the queue lives in memory and commands run at once.
  uint64_t group = 0;
  // Commands proposed and not yet applied, by their number (QueueCommand::origin; the broker's
  // proposals.cc). One whose copy was lost (another leader's entry took its place, or its
  // forward went unanswered) is sent again: the queue's machine admits each number once, so a
  // command committed twice runs once.
  struct PendingCommand {
    queue::QueueCommand command;
    CommandDone done;
    uint64_t bytes = 0;          // in the log
    uint64_t first_sent_ms = 0;  // given up (not done) if not placed for long
    uint64_t term = 0;           // the term it was sent in, or placed in once it is
    uint64_t placed_index = 0;   // where its copy is in the log; 0: not placed
    bool in_flight = false;      // sent, and its placement not answered yet
    uint64_t relayed_ms = 0;     // sent through another node's member (relay), last at
    uint32_t relay_copies = 0;   // copies sent to that member's node
    // Another node's command that it relays through this member (its origin is that node's):
    // proposed here in order with this node's own, and answered to it when applied.
    bool relayed = false;
  };
  // By number: this node's own commands by theirs (QueueCommand::origin), the relayed ones
  // from relayed_command_key_base up, in the order they came.
  std::map<uint64_t, PendingCommand> pending_commands;
  uint64_t pending_bytes = 0;
  uint64_t next_command_seq = 1;
  uint64_t next_relayed_key = relayed_command_key_base;
  // The floor of this node's commands (CommandOrigin::floor): its lowest own one pending, or
  // the next if none is.
  uint64_t own_floor() const {
    auto first = pending_commands.begin();
    return first != pending_commands.end() && first->first < relayed_command_key_base
               ? first->first
               : next_command_seq;
  }
  std::set<uint64_t> unsent;                // numbers to send (new ones, and lost copies)
  std::map<uint64_t, uint64_t> placed_at;   // log index -> number, of copies placed
  std::map<uint64_t, size_t> placed_terms;  // term -> copies placed in it, unresolved
  std::map<uint64_t, size_t> sent_terms;    // term -> copies in flight sent in it
  uint64_t applied_term = 0;                // of the last entry applied
  // Relayed pending commands (PendingCommand::relayed): their origin (proposer, number) -> the
  // number they wait under here.
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> relayed_pending;
  // Used from a node that holds no member of its group (Broker::relay): the member's node it
  // goes through and that link's epoch, when this node last sent there, and this node's
  // holders of it (consumers and basic.get's), with the messages handed to each.
  uint64_t relay_via = 0;
  uint64_t relay_epoch = 0;
  uint64_t relay_next_answer = 0;  // the number of the next answer from it (0: any)
  uint64_t relay_applied = 0;      // the last entry a relay member said it had applied
  uint64_t relay_sent_ms = 0;      // keepalives
  struct RelayHolder {
    bool no_ack = false;
    // Each message handed to it, by its hand-out's delivery count (each hand-out of a message
    // counts more than the one before), until it is known gone from it and no member's listing
    // from before can come any more: a lagging member's list of what the holder holds (a
    // resync) may show one it was given, settled or gave back, which is not handed out again.
    struct Held {
      uint32_t delivery_count = 0;
      bool settling = false;  // acknowledged, rejected or requeued: not answered yet
      uint64_t gone_at = 0;   // answered: gone from the holder at this entry (0: held)
    };
    std::map<queue::MessageId, Held> delivered;
  };
  std::map<queue::HolderId, RelayHolder> relay_holders;
  // Those answered gone (Held::gone_at), by the entry: forgotten once the relay member says it
  // applied that far.
  std::multimap<uint64_t, std::pair<queue::HolderId, queue::MessageId>> relay_gone;
  std::pair<uint64_t, uint64_t> relay_counts;  // ready, consumers: as the relay member last said
  // On a member's node: the nodes without a member that use the queue, each with when it was
  // last heard from and whether it goes through this node.
  struct RelayUser {
    uint64_t heard_ms = 0;
    bool through_here = false;
    uint64_t answers = 0;  // sent to it (RelayedEffects::number)
    // Its resync: it had what the entries up to `after` delivered; the holders to resync once
    // this replica has applied that far.
    uint64_t after = 0;
    std::optional<std::set<queue::HolderId>> resync;
    uint64_t life = 0;
  };
  std::map<uint64_t, RelayUser> relay_users;
  // Bytes of its log applied since its last snapshot (see Broker::maybe_snapshot).
  uint64_t log_bytes_since_snapshot = 0;
  uint64_t last_snapshot_bytes = 0;
  uint64_t applied_index = 0;        // the last entry of its log applied
  uint64_t snapshot_index = 0;       // where its last snapshot (of this life) was taken
  bool had_consumer = false;         // auto-delete applies only after a first consumer
  uint64_t wake_at_ms = UINT64_MAX;  // when the broker's timer will next serve it
  // The term in which this node took over the queue's effects as its group's leader
  // (Broker::take_over); effects run only while it leads in that term. 0: never here.
  uint64_t effects_term = 0;
  // Commands detaching this node's holders of earlier lives, proposed and not answered.
  uint64_t previous_lives_detaching = 0;
  // x-expires: the queue is deleted once it has gone this long without consumers, basic.get or
  // a redeclare (reference §11.2); last_used_ms is the last of those.
  std::optional<uint64_t> expires_ms;
  uint64_t last_used_ms = 0;
  // Redeliveries carry x-delivery-count (quorum queues, and any queue with a delivery limit).
  bool delivery_count_header = false;
  // The delayed exchange this internal queue holds messages for; empty for ordinary queues.
  std::string delayed_exchange;

  // At-least-once dead-lettering: dead letters that a target refused (it was full) or that
  // routed nowhere stay with their queue and are offered again until every target has them.
  std::deque<std::shared_ptr<HandOver>> retained_dead_letters;
  // Leaving messages whose targets all have them, for the next HandedOverCommand.
  std::vector<queue::MessageId> handed_over;
  uint64_t retained_dead_letter_bytes = 0;
  uint64_t dead_letter_retry_at_ms = UINT64_MAX;
};

// A message on its way from a queue into others: dead-lettered, parked, or released by a delayed
// exchange. A durable source keeps it leaving (QueueMachine::keep_leaving_messages) until every
// target has it stored, and only then is it handed over (gone from the source's log too): a crash
// in between offers it again, so it arrives at least once.
struct HandOver {
  std::weak_ptr<Queue> source;
  VirtualHost* vhost = nullptr;
  queue::MessageId id;        // leaving the source; 0: the source keeps no record (in memory)
  queue::MessagePtr message;  // as it arrives: x-death added, or x-delay negated
  std::string exchange;       // it is routed by this exchange as it is bound at the time
  std::string routing_key;
  std::vector<std::string> extra_keys;   // CC keys
  std::vector<std::string> accepted_by;  // targets that have it already
  bool dead_letter = false;              // cycles end it (RabbitMQ's rule for dead letters)
  bool at_least_once = false;            // refused or unrouted: kept and offered again
  size_t outstanding = 0;                // enqueues not yet answered
  bool refused = false;                  // by a target in the current offer
};

// How often a queue offers its retained dead letters again.
constexpr uint64_t dead_letter_retry_interval_ms = 1000;

// A message's x-delay header as the delayed-message plugin reads it (integers except signed
// 8-bit, decimal strings, truncated floats): the delay in milliseconds when it is within
// (0, 2^32-1], else nothing (the message is routed at once).
std::optional<uint64_t> message_delay_ms(const amqp::BasicProperties& properties);

// The delivery limit of a quorum queue that does not set one (RabbitMQ 4.0 and later).
constexpr int64_t quorum_delivery_limit_default = 20;
// Where a message past its delivery limit goes when its queue has no dead-letter exchange (or
// it routes nowhere): one per virtual host, created when first needed, so that nothing is
// dropped silently. An operator reads it like any queue and republishes what is worth it.
constexpr std::string_view parking_queue_name = "hamq.parked";

using QueuePtr = std::shared_ptr<Queue>;

struct ExchangeDeclare {
  std::string name;
  std::string type;
  bool passive = false;
  bool durable = false;
  bool auto_delete = false;
  bool internal = false;
  amqp::FieldTable arguments{};
};

struct QueueDeclare {
  std::string name;  // already resolved: never empty
  bool passive = false;
  bool durable = false;
  bool exclusive = false;
  bool auto_delete = false;
  amqp::FieldTable arguments{};
};

class VirtualHost {
 public:
  // memory_counter: the node's count of bytes held by queues, which every queue adds to.
  explicit VirtualHost(std::string name, uint64_t* memory_counter = nullptr);

  const std::string& name() const { return name_; }
  const std::map<std::string, Exchange>& exchanges() const { return exchanges_; }
  const std::unordered_map<std::string, QueuePtr>& queues() const { return queues_; }
  // Messages put in the parking queue since the start (a metric: each one is a poison message).
  uint64_t messages_parked = 0;

  Result<void, ProtocolError> declare_exchange(const ExchangeDeclare& declare);
  Result<void, ProtocolError> delete_exchange(const std::string& name, bool if_unused);
  const Exchange* find_exchange(const std::string& name) const;
  Exchange* find_exchange(const std::string& name);
  // The binding exists already.
  bool has_binding(const std::string& source, const Binding& binding) const;

  // Creates the queue or checks that the existing one is equivalent; returns it.
  Result<QueuePtr, ProtocolError> declare_queue(const QueueDeclare& declare, ConnectionId owner);
  // The queue, or 404; 405 when it is exclusive to another connection.
  Result<QueuePtr, ProtocolError> use_queue(const std::string& name, ConnectionId user) const;
  // Removes the queue from the vhost and every binding to it. Returns it for the caller to
  // notify its consumers.
  QueuePtr remove_queue(const std::string& name);
  // The queue of that name, whoever owns it; null if none.
  QueuePtr find_queue(const std::string& name) const;

  Result<void, ProtocolError> bind(const std::string& source, const Binding& binding,
                                   ConnectionId user);
  Result<void, ProtocolError> unbind(const std::string& source, const Binding& binding,
                                     ConnectionId user);

  // The queues a message goes to: each at most once, following exchange-to-exchange bindings
  // and alternate exchanges. The exchange must exist.
  std::vector<QueuePtr> route(const std::string& exchange, const std::string& routing_key,
                              const std::vector<std::string>& extra_keys,
                              const amqp::FieldTable* headers) const;

  // Exclusive queues of a connection that is going away.
  std::vector<std::string> queues_owned_by(ConnectionId owner) const;
  size_t queue_count() const { return queues_.size(); }

 private:
  void declare_predefined(std::string name, ExchangeType type);
  void route_through(const Exchange& exchange, const std::string& routing_key,
                     const std::vector<std::string>& extra_keys, const amqp::FieldTable* headers,
                     std::vector<const Exchange*>& visited, std::vector<QueuePtr>& out) const;
  void remove_bindings_to(const std::string& destination, bool is_queue);
  // Checks both ends of a binding (the default exchange cannot be one, both must exist, an
  // exclusive queue must be the user's) and returns the source exchange.
  Result<std::map<std::string, Exchange>::iterator, ProtocolError> binding_source(
      const std::string& source, const Binding& binding, ConnectionId user);
  void auto_delete_if_unbound(const std::string& exchange);
  std::string in_vhost(std::string_view kind, const std::string& name) const;

  std::string name_;
  uint64_t* memory_counter_;
  std::map<std::string, Exchange> exchanges_;
  std::unordered_map<std::string, QueuePtr> queues_;
};

}  // namespace hamq::broker
