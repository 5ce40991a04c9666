// QueueCommand: one change to a queue, as it travels through the queue's replicated log. Every
// replica applies the same commands, with the time the leader stamped on each, to its own
// QueueMachine, and so reaches the same state and makes the same decisions (deliveries, expiries,
// dead letters). The encoding is the log entry's payload: a format version, the time, the kind
// and its fields; a message travels as its exchange, routing key, AMQP content header and body.
//
// decode() never trusts its input (a damaged or foreign entry is an error value, never a crash),
// and apply() accepts any command that decodes: unknown holders and ids are ignored, as the
// machine does.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/result.h"
#include "queue/queue_machine.h"

namespace hamq::amqp {
class WireWriter;
class WireReader;
}  // namespace hamq::amqp

namespace hamq::queue {

// A message as commands and snapshots carry it: exchange, routing key, AMQP content header, body.
void encode_message(amqp::WireWriter& out, const Message& message);
Result<MessagePtr, std::string> decode_message(amqp::WireReader& in);

struct EnqueueCommand {
  MessagePtr message;
  // Set for a delayed exchange's internal queue: expire after exactly this long.
  std::optional<uint64_t> ttl_ms = std::nullopt;
  // Set for a message handed over from a queue on a log: a copy of a hand-over taken before is
  // accepted and does nothing (QueueMachine::took_hand_over).
  std::optional<HandOverKey> from = std::nullopt;
};
struct AttachCommand {
  HolderId consumer;
  // Replicated options only: a channel's shared (global) prefetch is node-local state and does
  // not apply to replicated queues (as RabbitMQ's quorum queues ignore global QoS).
  uint32_t prefetch_count = 0;
  int64_t priority = 0;
  bool no_ack = false;
  bool exclusive = false;
};
struct CancelCommand {
  HolderId consumer;
};
struct DetachCommand {
  HolderId holder;
};
enum class SettleKind : uint8_t { settle = 0, requeue = 1, discard = 2 };
struct SettleCommand {
  SettleKind kind = SettleKind::settle;
  HolderId holder;
  std::vector<MessageId> ids;
};
struct GetCommand {
  HolderId holder;
  bool no_ack = false;
};
struct PurgeCommand {};
// Time passes: expire what is due (the leader proposes it when a queue's timer fires).
struct ExpireCommand {};
struct SuspendCommand {
  HolderId consumer;
  bool suspend = true;  // false: resume
};
// Leaving messages (QueueMachine::keep_leaving_messages) that every target now has.
struct HandedOverCommand {
  std::vector<MessageId> ids;
};

// Who proposed a command, and its number among that proposer's commands to the queue
// (QueueMachine::admit): a copy resent after a leader change applies once. proposer 0: none (an
// entry written before commands were numbered).
struct CommandOrigin {
  uint64_t proposer = 0;
  uint64_t seq = 0;
  uint64_t floor = 0;  // the proposer's lowest number not settled yet
  bool operator==(const CommandOrigin&) const = default;
};

struct QueueCommand {
  using Body =
      std::variant<EnqueueCommand, AttachCommand, CancelCommand, DetachCommand, SettleCommand,
                   GetCommand, PurgeCommand, ExpireCommand, SuspendCommand, HandedOverCommand>;
  QueueCommand() = default;
  QueueCommand(uint64_t time, Body what, CommandOrigin from = {})
      : time_ms(time), body(std::move(what)), origin(from) {}
  uint64_t time_ms = 0;  // stamped by the leader
  Body body;
  CommandOrigin origin;  // set by the broker as it proposes the command
};

std::string encode_command(const QueueCommand& command);
Result<QueueCommand, std::string> decode_command(std::string_view bytes);
// Replaces the time an encoded command carries (a group's leader stamps the commands other nodes
// forward to it with its own clock). False, and `encoded` unchanged, if it is not a command.
bool restamp_command(std::string& encoded, uint64_t time_ms);
// The time an encoded command carries; nothing if it is not a command.
std::optional<uint64_t> command_time(std::string_view encoded);
// Who proposed an encoded command; nothing if it is not a command (proposer 0: not numbered).
std::optional<CommandOrigin> command_origin(std::string_view encoded);

// What applying a command did, for the replica that serves the clients.
struct CommandEffects {
  std::vector<Delivery> deliveries;
  std::optional<EnqueueResult> enqueued;  // EnqueueCommand
  std::optional<AttachResult> attached;   // AttachCommand
  std::optional<Delivery> got;            // GetCommand (none: the queue was empty)
  size_t count = 0;                       // PurgeCommand: purged; DetachCommand: returned
  bool duplicate = false;                 // a copy of a command applied before: did nothing
  // A command of its proposer numbered before it has not been applied: did nothing; its
  // proposer sends it again after that one (QueueMachine::admit).
  bool early = false;
};
// `log_index`: where the command is in the queue's log (0: the queue has none); an enqueued
// message is stored there. A numbered command the machine admitted before does nothing.
CommandEffects apply_command(QueueMachine& machine, const QueueCommand& command,
                             uint64_t log_index = 0);

// What a member of a queue's group tells a node that holds none (the broker's relay): what that
// node's command number `seq` did (0: no command of its), the deliveries to its holders, which
// of its consumers the queue cancelled, and the queue's counts. Every delivery carries its message
// (a body on disk is read first).
struct RelayedEffects {
  // Counts the answers the member sent this node for the queue (from 1), so that one lost on
  // the way shows as a gap.
  uint64_t number = 0;
  uint64_t seq = 0;
  CommandEffects effects;
  std::vector<HolderId> cancelled;
  // The queue's ready messages and consumers as the member has them when it answers.
  uint64_t ready = 0;
  uint64_t consumers = 0;
  // The last entry of the queue's log the member had applied when it answered.
  uint64_t applied = 0;
};
std::string encode_relayed(const RelayedEffects& relayed);
Result<RelayedEffects, std::string> decode_relayed(std::string_view bytes);

}  // namespace hamq::queue
