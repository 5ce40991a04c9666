// Broker: the node's virtual hosts, and the registry that lets a queue hand a delivery to the
// channel of whichever connection holds the consumer.
//
// Thread: owned by one event loop; every connection on that loop shares it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "broker/definitions.h"
#include "broker/virtual_host.h"

namespace hamq::broker {

using queue::HolderId;

// Flow control: a publisher that grows the backlog of a queue that has consumers (they are not
// keeping up) stops being read until the backlog has halved, as RabbitMQ's credit flow does.
// A queue without consumers may grow up to the memory watermark.
constexpr size_t queue_flow_ready_high = 4096;
constexpr size_t queue_flow_ready_low = 2048;
// A publisher that has this many commands of a durable queue waiting for the log stops being
// read until they are down to the low mark (the disk is slower than the network).
constexpr size_t queue_flow_pending_high = 8192;
constexpr size_t queue_flow_pending_low = 4096;
// The same in bytes of those commands (large messages): the log takes at most 64 MiB that are
// not yet committed, and refuses more.
constexpr uint64_t queue_flow_pending_bytes_high = 16 << 20;
constexpr uint64_t queue_flow_pending_bytes_low = 8 << 20;
// A durable queue keeps the bodies of this many of its next ready messages in memory, as long as
// they take at most durable_queue_cached_body_bytes; the others (a large message at once) wait on
// disk, an index entry each in memory.
constexpr size_t durable_queue_cached_bodies = 256;
constexpr uint64_t durable_queue_cached_body_bytes = 16 << 20;
// A durable queue snapshots its state once this many bytes of its log were applied since the
// last snapshot (by default; set_queue_snapshot_log_bytes), and at least queue_snapshot_log_ratio
// times what its last snapshot took (so snapshots write at most a quarter of what the log does).
// Its oldest live messages, up to queue_snapshot_carried_bytes_default with their bodies (a
// snapshot brings them back into memory), are carried forward in it; the others are references to
// the log entries holding their bodies, which the log keeps. The log before those is released,
// however out of order the acks were: one old unacknowledged message does not pin it.
constexpr uint64_t queue_snapshot_log_bytes_default = 32 << 20;
constexpr uint64_t queue_snapshot_log_ratio = 4;
constexpr uint64_t queue_snapshot_carried_bytes_default = 8 << 20;
// A snapshot is one log record, read and written whole: a queue whose snapshot would be larger
// than this (about a million messages) does not snapshot.
constexpr uint64_t queue_snapshot_bytes_max = 48 << 20;
// A durable queue's group has this many members (on distinct nodes; fewer in a smaller
// cluster), unless its x-quorum-initial-group-size says otherwise (RabbitMQ's default).
constexpr uint64_t queue_group_size_default = 3;

// A connection that the memory alarm or flow control stopped reading, to be told when it may
// read again.
class BlockedPublisher {
 public:
  virtual ~BlockedPublisher() = default;
  virtual void unblock() = 0;
  virtual void flow_released(const Queue* queue) = 0;
  // A publisher that consumes from the queue too waits only for its log, never for its backlog
  // (that would wait for its own acks).
  virtual bool consumes_from(const Queue& queue) const = 0;
};

// What a queue delivers to: a channel's consumer.
class ConsumerSink {
 public:
  virtual ~ConsumerSink() = default;
  virtual void deliver(const QueuePtr& queue, const queue::Delivery& delivery) = 0;
  // The queue went away (deleted, auto-deleted, its exclusive owner closed).
  virtual void consumer_cancelled_by_broker(HolderId consumer) = 0;
  // A reply published to this channel's direct reply-to name (reference §15).
  virtual void deliver_reply(const queue::Message& message) = 0;
};

// Direct reply-to: the pseudo-queue a requester consumes from, and the prefix of the per-channel
// names the broker substitutes for it in reply_to.
constexpr std::string_view reply_to_queue = "amq.rabbitmq.reply-to";
constexpr std::string_view reply_to_prefix = "amq.rabbitmq.reply-to.";

// Where an entry sits in a group's log. A proposal is the entry applied at its position only if
// both match: after a leader change another leader's entry can take the same index (Raft §5.3).
struct LogPosition {
  uint64_t term = 0;
  uint64_t index = 0;
  bool operator==(const LogPosition&) const = default;
};

// Where definitions are kept: the metadata group, in the runtime. A change is proposed there and
// comes back, committed, through Broker::apply_definition, on every node.
class DefinitionStore {
 public:
  virtual ~DefinitionStore() = default;
  // Appends the change to the metadata group's log, through its leader: `placed` learns where
  // it was put, or nothing when it was not (at once, or once the leader answered).
  using Placed = std::function<void(std::optional<LogPosition>)>;
  virtual void propose(const MetadataCommand& command, Placed placed) = 0;
};

// Where durable queues keep their commands: the queue groups on the node's log, in the runtime.
// The broker proposes a command and runs it on the queue's machine when the store hands the
// entry back, applied, through Broker::apply_queue_entry.
class QueueStore {
 public:
  virtual ~QueueStore() = default;
  // Founds this node's member of a durable queue's group (named by its declare:
  // queue_group_of), whose members are the nodes `members` (each founds it alike when it applies
  // the declare; the first campaigns at once). A group of this node alone takes proposals at
  // once; false when the log refuses it.
  virtual bool create_group(uint64_t group, const std::vector<uint64_t>& members) = 0;
  // The log holds this group (a queue kept from before a restart has its messages there).
  virtual bool has_group(uint64_t group) const = 0;
  // The queue is gone: its group and what its log holds go too.
  virtual void remove_group(uint64_t group) = 0;
  // This node was made a member of an existing group (SetQueueMembers): an empty replica that
  // neither votes nor campaigns until its leader's snapshot or entries reach it.
  virtual void join_group(uint64_t group) = 0;
  // Appends a command to the group's log, through its leader if that is another node: `placed`
  // learns where it was put, or nothing when it was not (refused, no leader known, the leader
  // did not answer). Placed here, it is told before this returns; placed by another node, always
  // before the entry is applied here.
  using Placed = std::function<void(std::optional<LogPosition>)>;
  virtual void propose(uint64_t group, std::string command, Placed placed) = 0;
  // The command applied at `index` of the group's log, as it was proposed; nothing if it cannot
  // be read (damaged, or released).
  virtual std::optional<std::string> read(uint64_t group, uint64_t index) const = 0;
  // The queue's state after the entry at `index`, to replace the log up to there; the entries
  // from `retain_from` (0: none) up to `index` stay readable (the state refers to them).
  virtual void compact(uint64_t group, uint64_t index, std::string snapshot,
                       uint64_t retain_from) = 0;
  // The term in which this node leads the group; nothing while it does not (a follower, a
  // candidate, or not a member).
  virtual std::optional<uint64_t> leader_term(uint64_t group) const = 0;
  // The latest term this node's member of the group knows of (0: not a member).
  virtual uint64_t current_term(uint64_t group) const = 0;
  // The log's records of this group on this node were found damaged (a checksum failed): its
  // member here does not run.
  virtual bool damaged(uint64_t group) const = 0;
  // Drops this node's damaged copy of the group and joins it again, empty, to take its state
  // from the other members (it votes only once it has what they committed).
  virtual void rebuild_group(uint64_t group) = 0;
};

// How a node reaches a durable queue whose group it holds no member of: through one member's
// node (the queue's relay, broker_relay.cc), over the cluster link. Commands go there to be
// proposed; what they did, and the deliveries to this node's consumers, come back.
class QueueRelay {
 public:
  virtual ~QueueRelay() = default;
  // The link to the node is up: a number that changes each time it comes up again (frames
  // sent on an earlier link may be lost), 0 while it is down.
  virtual uint64_t link_epoch(uint64_t node) const = 0;
  // Sends to a member's node (Broker::relay_forwarded there), and answers a node without a
  // member (Broker::relay_answered there).
  virtual void forward(uint64_t node, uint64_t group, std::string data) = 0;
  virtual void answer(uint64_t node, uint64_t group, std::string data) = 0;
};

// A command no copy of which committed in its queue's log for this long (no leader, the leader
// refused or did not answer, a log cut off from its majority) is given up: not done (a publish
// is nacked).
constexpr uint64_t command_give_up_ms = 30'000;

// A queue timer set for a wall-clock time (a message's expiry) fires no later than this, to look
// again: a step of the system clock meanwhile moves the time it is due.
constexpr uint64_t wall_clock_recheck_ms = 60'000;

class Broker {
 public:
  // seed feeds the generator of server-chosen names (queues, consumer tags).
  Broker(const std::vector<std::string>& virtual_hosts, uint64_t seed);
  // Queues point at the memory counter inside: a Broker stays where it was made.
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  VirtualHost* find_virtual_host(const std::string& name);
  const std::map<std::string, std::unique_ptr<VirtualHost>>& virtual_hosts() const {
    return virtual_hosts_;
  }

  // The memory watermark (reference §8): while the bytes held by queues are above it, connections
  // that publish are blocked; they are released when the bytes fall below 90% of it.
  // 0: no watermark.
  void set_memory_high_watermark(uint64_t bytes) { memory_high_watermark_bytes_ = bytes; }
  uint64_t memory_used() const { return memory_used_bytes_; }
  bool memory_alarm() const { return memory_alarm_; }
  // Raises or clears the alarm from the current count; clearing it unblocks every publisher.
  void update_memory_alarm();
  // The disk alarm (reference §8): raised while the data directory's disk is below its free-space
  // limit or refused a write; publishers are blocked as for memory, consumers go on (their acks
  // are small and the limit leaves room for them). Clearing it unblocks every publisher.
  void set_disk_alarm(bool raised);
  bool disk_alarm() const { return disk_alarm_; }
  // Either alarm: a connection that publishes now is blocked, and told why.
  bool publishing_blocked() const { return memory_alarm_ || disk_alarm_; }
  std::string_view blocked_reason() const {
    if (memory_alarm_ && disk_alarm_) return "low on memory & disk";
    return disk_alarm_ ? "low on disk" : "low on memory";
  }
  void add_blocked(BlockedPublisher* publisher) { blocked_.push_back(publisher); }
  void remove_blocked(BlockedPublisher* publisher);

  // Flow control: `publisher` waits until `queue` drains (see queue_flow_ready_high).
  void wait_for_flow(BlockedPublisher* publisher, const Queue* queue);
  // Releases the publishers waiting on `queue` if it has drained or lost its consumers.
  void check_flow(const Queue& queue);
  void forget_publisher(BlockedPublisher* publisher);

  // This node's id in its cluster (NodeIdentity): holder and connection ids carry it, so that
  // ids written into replicated logs never collide between nodes. Default 1.
  void set_node_id(uint64_t node);
  uint64_t node_id() const { return node_id_; }
  // Which start of the node's process this is (DATA_DIR/LIFE, counted up at each start): holder
  // and connection ids carry it, so those of a previous life are told apart. Default 1.
  void set_life(uint64_t life) {
    life_ = life % queue::holder_lives;
    whole_life_ = life;
  }
  uint64_t life() const { return life_; }
  HolderId new_holder() { return HolderId{queue::holder_id_of(node_id_, life_, next_holder_++)}; }
  // Connections past connection.open, for the node's connection limit.
  uint32_t open_connection_count() const { return open_connections_; }
  void connection_opened() { ++open_connections_; }
  void connection_closed() { --open_connections_; }
  ConnectionId new_connection_id() {
    ConnectionId id = queue::holder_id_of(node_id_, life_, next_connection_id_++);
    live_connections_.insert(id);
    return id;
  }
  // The connection is gone: an exclusive queue declared for it that is applied after this is
  // deleted again.
  void connection_gone(ConnectionId id) { live_connections_.erase(id); }
  // "amq.gen-..." and "amq.ctag-...": a prefix and 22 random base64url characters.
  std::string random_name(std::string_view prefix);

  void register_sink(HolderId consumer, ConsumerSink* sink) { sinks_[consumer.value] = sink; }
  void unregister_sink(HolderId consumer) { sinks_.erase(consumer.value); }

  // The two clocks, which the runtime sets before each event. The wall clock (milliseconds since
  // the epoch) is the time messages and queue commands carry: x-death, and the stamp by which a
  // queue's machine takes a command (TTLs, delays). It follows the system clock, back too. The
  // monotonic clock (milliseconds from any origin, never back) times every wait: queue timers,
  // commands given up, the relay's waits and keepalives, x-expires leases; a step of the system
  // clock moves none of them.
  void set_clock(uint64_t monotonic_ms, uint64_t unix_ms) {
    monotonic_ms_ = std::max(monotonic_ms_, monotonic_ms);
    wall_clock_ms_ = unix_ms;
  }
  uint64_t wall_clock_ms() const { return wall_clock_ms_; }
  uint64_t monotonic_ms() const { return monotonic_ms_; }

  // Queue timers. After a command, a queue may need attention at a later time (a message
  // expires, the queue itself expires); schedule() notes when. next_timer_ms() is the earliest such
  // time on the monotonic clock (UINT64_MAX: none), and on_timer() serves every queue that is due
  // at monotonic_ms(). The listener is told whenever next_timer_ms() becomes earlier, so the
  // runtime can re-arm its one timer.
  void schedule(const QueuePtr& queue);
  // The queue was used (declared, consumed from, read with basic.get): its x-expires lease
  // starts again from now.
  void queue_used(const QueuePtr& queue);
  uint64_t next_timer_ms() const;
  void on_timer();
  void set_timer_listener(std::function<void()> listener) { timer_listener_ = std::move(listener); }

  // Hands each delivery to its consumer's channel, then sends the queue's dead letters on.
  void dispatch(const QueuePtr& queue, const std::vector<queue::Delivery>& deliveries);

  // Direct reply-to names ("amq.rabbitmq.reply-to.<suffix>") and the channels behind them.
  std::string register_reply_consumer(ConsumerSink* sink);
  void unregister_reply_consumer(const std::string& name) { reply_consumers_.erase(name); }
  ConsumerSink* find_reply_consumer(const std::string& name) const;

  // Definitions (exchanges, queues, bindings) change through the metadata group's log: a change
  // is proposed, and made when its entry is applied, on every node alike, with the checks that
  // decide whether it is allowed (RabbitMQ's equivalence rules). `done` learns the verdict: a
  // count (queue.delete-ok's messages) or the error to report. Without a store (tests) the change
  // is applied before this returns.
  using DefinitionResult = Result<uint64_t, ProtocolError>;
  using DefinitionDone = std::function<void(const DefinitionResult&)>;
  void set_definition_store(DefinitionStore* store) { definition_store_ = store; }
  // Part of a cluster: this node's model may lag behind what another node has committed.
  void set_clustered(bool clustered) { clustered_ = clustered; }
  bool clustered() const { return clustered_; }
  void change_definitions(MetadataCommand command, DefinitionDone done = {});
  // A committed entry of the metadata group, in log order (and, at a restart, replayed).
  DefinitionResult apply_definition(const MetadataCommand& command, LogPosition position);
  // The metadata group applied an entry that changes nothing (a new leader's first): this
  // node's changes placed before it, or in an earlier term, were lost (and are answered so).
  void definition_entry_passed(LogPosition position) { answer_definitions(position, nullptr); }
  // The metadata group's snapshot replaces the (empty) model, at a restart.
  Result<void, std::string> restore_definitions(std::string_view snapshot);
  // The model as the metadata group's snapshot states it.
  Definitions current_definitions() const;
  // The cluster's nodes as the metadata group records them, by id (forgotten ones marked); the
  // listener runs after each change (the server keeps its links and names in step).
  const std::map<uint64_t, ClusterNode>& cluster_nodes() const { return cluster_nodes_; }
  void set_nodes_listener(std::function<void()> listener) { nodes_listener_ = std::move(listener); }
  // While the metadata group replays at a restart, queues get their groups' names but the
  // groups are not founded: the queue groups are opened after it (NodeLog::open_queue_groups),
  // and then found_missing_groups() founds those the log lacks (a crash came between a declare
  // and its group's founding).
  // The node's log, as it started: empty or not, and its incarnation (NodeIdentity).
  void set_log_identity(bool fresh, uint64_t incarnation) {
    fresh_log_ = fresh;
    incarnation_ = incarnation;
  }
  // It started on an empty log and the metadata recorded an older incarnation for it: it lost
  // its disk. The groups of the queues it learns of as it starts existed before, and it may
  // have held entries of theirs and voted in them: found_missing_groups joins those with other
  // members rather than founding them anew (a joined member neither campaigns nor votes for a
  // log that lacks what its first leader had committed: docs/raft.md, "A member that lost its
  // disk").
  bool disk_lost() const;
  // The queue's group is one such a node joins rather than founds.
  bool joins_after_disk_loss(const Queue& queue) const;
  // Proposes recording this node's incarnation in the metadata (SetNodeIncarnation), if the
  // record differs; once its start has caught up.
  void record_incarnation();
  void begin_definition_replay() { replaying_definitions_ = true; }
  void end_definition_replay() { replaying_definitions_ = false; }
  void found_missing_groups();
  // Proposes deleting what this node's previous life declared that does not outlive it:
  // transient exchanges and queues, exclusive queues. Returns how many.
  size_t drop_transient_definitions();
  // Proposes declaring each vhost's parking queue (parking_queue_name) where it is missing, so
  // that it is there before a message is parked in it. Returns how many.
  size_t declare_parking_queues();
  // Changes proposed by this node and not yet applied.
  size_t pending_definition_count() const { return pending_definitions_.size(); }
  // Proposes deleting a queue (auto-delete, x-expires, its exclusive owner left); once. `then`
  // runs when the delete is applied (at once if it was proposed before).
  void propose_queue_delete(const QueuePtr& queue, std::function<void()> then = {});
  // Queue log entries that did not decode (skipped); for the log and metrics.
  uint64_t undecodable_entries() const { return undecodable_entries_; }

  // An auto-delete queue that has had a consumer is deleted once it has none; `then` runs once
  // it is (at once if it is not).
  void delete_if_unused(const QueuePtr& queue, std::function<void()> then = {});

  // Durable queues keep their messages in the store's groups. Without a store (tests), every
  // queue lives in memory.
  void set_queue_store(QueueStore* store) { queue_store_ = store; }
  void set_queue_snapshot_log_bytes(uint64_t bytes) { queue_snapshot_log_bytes_ = bytes; }
  void set_queue_snapshot_carried_bytes(uint64_t bytes) { queue_snapshot_carried_bytes_ = bytes; }
  // Runs a command on a queue. A queue with a group proposes it, and runs it when its entry is
  // applied; any other runs it at once. Either way the deliveries and dead letters it makes are
  // dispatched, then `done` is told what it did (or that it could not be done).
  void execute(const QueuePtr& queue, queue::QueueCommand command, CommandDone done = {});
  // The stamp for a command: the broker's clock.
  queue::QueueCommand command(decltype(queue::QueueCommand::body) body) const {
    return queue::QueueCommand{wall_clock_ms_, std::move(body)};
  }
  // A command another node proposed to a group this node leads: it carries this node's time from
  // here on (the leader's clock stamps every command, DESIGN §2).
  void restamp_forwarded(std::string& encoded) const {
    queue::restamp_command(encoded, wall_clock_ms_);
  }
  // A committed entry of a queue's group, in log order (and, after a restart, the log replayed).
  void apply_queue_entry(uint64_t group, LogPosition position, std::string_view data);
  // A queue's group starts from a snapshot (at a restart, or its leader's when this member was
  // far behind), taken after the entry at `position`: the queue's state is replaced by it.
  Result<void, std::string> restore_queue(uint64_t group, LogPosition position,
                                          std::string_view snapshot);
  // A snapshot of the queue's group as a member that lags is sent it: its messages that refer to
  // this node's log carry their bodies (read back from the log). Nothing when a body cannot be
  // read (the send is tried again later) or the group is no queue's.
  std::optional<std::string> self_contained_snapshot(uint64_t group, std::string_view snapshot);
  // Sends again the commands whose copies were lost and could not be sent at once, and gives up
  // those not committed for command_give_up_ms (the log calls it on each tick).
  void resend_lost();
  // The relay (broker_relay.cc): a node that holds no member of a queue's group sends its
  // commands through a member's node. Without a relay (tests, a single node) they are refused.
  void set_queue_relay(QueueRelay* relay) { queue_relay_ = relay; }
  // On a member's node: what a node without a member sent (QueueRelay::forward).
  void relay_forwarded(uint64_t from, uint64_t group, std::string_view data);
  // On the node without a member: the member's node answered (QueueRelay::answer).
  void relay_answered(uint64_t from, uint64_t group, std::string_view data);
  // A durable queue used here through another node's member; its ready messages and consumers
  // as its replica here has them, or else as its relay member last said.
  bool relayed(const Queue& queue) const;
  size_t ready_count(const Queue& queue) const;
  size_t consumer_count(const Queue& queue) const;
  // Answers from a member that did not decode (dropped); for the log and metrics.
  uint64_t undecodable_relay_answers() const { return undecodable_relay_answers_; }
  // The log asks: the queue's old entries keep the oldest segment of the node's log from being
  // deleted. It snapshots now if its live messages are few enough to carry.
  void snapshot_queue(uint64_t group);
  // The log stopped for good: nothing pending will be applied.
  void fail_pending_commands();
  // A restart replays the queues' logs between these two. Messages that left a queue during the
  // replay were handed over in the previous life, or are still leaving: once it is over, those
  // still leaving are offered to their targets again (they may arrive twice: at least once).
  void begin_replay() { replaying_ = true; }
  // Proposes, one command per queue, that the messages whose hand-over finished since the last
  // call are gone from their queues. The log calls it after each round of applied entries.
  void flush_hand_overs();
  void end_replay();
  // After a restart has replayed the queues' logs: the consumers and holders of unacknowledged
  // messages of the previous life are detached, so their messages are ready again, redelivered.
  void detach_previous_holders();
  // Another node is gone (its link down for a while: dead, or cut off): in every queue this node
  // leads, and in those it takes over while the node is gone, that node's consumers are
  // cancelled and its holders detached, so what they held is ready again, redelivered. A node
  // that comes back finds them cancelled (its clients are told, basic.cancel).
  void node_gone(uint64_t node);
  void node_back(uint64_t node) { gone_nodes_.erase(node); }
  // The replicated queues with a member on a forgotten node (or one of `away`: unreachable for
  // long), each with the members it is to have instead: that one replaced by the node holding
  // the fewest members that it is not on and is not away (or left out, when there is none; a
  // member away is then kept).
  std::vector<SetQueueMembers> queue_repairs(const std::set<uint64_t>& away = {}) const;
  // The nodes a durable queue's group held here is to have (SetQueueMembers), by its group:
  // nothing for a group that is no queue's.
  std::optional<std::vector<uint64_t>> queue_members(uint64_t group) const;
  // This node is no member of the group any more (its group removed it): the replica goes, its
  // consumers here are cancelled (basic.cancel) and its pending commands refused.
  void drop_replica(uint64_t group);
  // The replica's log here was found damaged while it ran, and is rebuilt from the other
  // members: its state goes the same way (its consumers here cancelled, its pending commands
  // refused), to be made again from their snapshot and log.
  void replica_damaged(uint64_t group);
  // On the group's leader: the consumers and holders of nodes that are no members of the queue
  // (any more) are detached, so what they held is ready again (the log calls it each second).
  void detach_non_members(uint64_t group);
  // The same for one group whose replica has caught up with its leader (a group with other
  // members catches up after the start): true once none is left to detach (proposals that
  // failed leave them, for the next sweep).
  bool sweep_previous_lives(uint64_t group);
  // A message whose body a durable queue left on disk, read back from its log (null if it
  // cannot be read; counted in unreadable_messages).
  queue::MessagePtr load_message(const Queue& queue, uint64_t stored_at);
  uint64_t unreadable_messages() const { return unreadable_messages_; }
  // The groups of the durable queues.
  std::set<uint64_t> queue_groups() const;
  // Commands proposed and not yet applied, all queues together.
  size_t pending_command_count() const;

 private:
  // Declared before the virtual hosts: their queues give their bytes back as they are destroyed.
  uint64_t memory_used_bytes_ = 0;
  std::map<std::string, std::unique_ptr<VirtualHost>> virtual_hosts_;
  std::unordered_map<uint64_t, ConsumerSink*> sinks_;
  std::unordered_map<std::string, ConsumerSink*> reply_consumers_;
  // Hands the messages that left a queue (its dead letters, or a delay queue's due messages) to
  // where they go next: see HandOver.
  void dead_letter(const QueuePtr& queue);
  void hand_over(const QueuePtr& queue, std::vector<queue::DeadLetter> letters);
  // Offers a hand-over to the queues its exchange routes it to now, skipping those that have it
  // already; false when it routes nowhere (nothing offered). Settled once every target answered.
  bool offer(const std::shared_ptr<HandOver>& hand_over);
  void settle(const std::shared_ptr<HandOver>& hand_over);
  // Kept with its source queue and offered again a second later (at-least-once dead letters).
  void retain(const std::shared_ptr<HandOver>& hand_over);
  // Every target has it: gone from the source's log, with the others of this turn
  // (flush_hand_overs).
  void finish_hand_over(const HandOver& hand_over);
  std::vector<std::weak_ptr<Queue>> sources_handed_over_;
  void retry_dead_letters(const QueuePtr& queue);
  // Empties the queue's retained dead letters and returns them.
  std::deque<std::shared_ptr<HandOver>> drop_retained_dead_letters(Queue& queue);
  // Enqueues a message the broker moves out of `from`'s source; `answered` learns whether the
  // queue took it (false: it refused it, full with reject-publish, or its log refused it). An
  // in-memory queue answers before this returns, a durable one once its entry is applied. A
  // target takes a hand-over from a queue on a log once, however often it is offered.
  void enqueue(const QueuePtr& target, queue::MessagePtr message, const HandOver& from,
               std::function<void(bool taken)> answered);
  // A message past its delivery limit with nowhere to go: into the vhost's parking queue.
  void park(const QueuePtr& from, const std::shared_ptr<HandOver>& hand_over,
            const queue::Message& message);
  bool replaying_ = false;

  // Runs a command on a queue's machine and hands out what it did.
  void run(const QueuePtr& queue, const queue::QueueCommand& command, const CommandDone& done,
           uint64_t log_index);
  void attach_group(const QueuePtr& queue, uint64_t group);
  // Proposes detaching this node's holders of earlier lives from the queue; true if there are
  // none (and none being detached).
  bool detach_previous_lives(const QueuePtr& queue);
  void detach_node(const QueuePtr& queue, uint64_t node);
  // The commands that cancel the queue's consumers and detach its holders that `which` picks
  // (consumers first).
  std::vector<queue::QueueCommand> detach_commands(
      const Queue& queue, const std::function<bool(HolderId)>& which) const;
  std::set<uint64_t> gone_nodes_;
  // Effects (handing dead letters over, timers, expiring the queue, retrying dead letters) run on
  // one replica: the group's leader, once it has taken the queue over in its term (take_over),
  // so that every replica applies the same entries but only one acts on them. In-memory queues
  // always run theirs.
  bool runs_effects(const Queue& queue) const;
  // This node leads the queue's group in `term` and has applied everything before: it offers
  // again what is leaving the queue (its old leader may have died mid-way: at least once) and
  // arms its timers.
  void take_over(const QueuePtr& queue, uint64_t term);
  void maybe_snapshot(const QueuePtr& queue, bool asked);
  // Tells everything proposed to the queue and not yet applied that it ended with `effects`
  // (null: not done).
  void finish_pending_commands(const QueuePtr& queue, const queue::CommandEffects* effects);
  // What a command takes in the log, for flow control; the message's body is most of it.
  static uint64_t command_bytes(const queue::QueueCommand& command);
  // Proposals (broker_proposals.cc). This node's life numbers the commands it proposes.
  uint64_t proposer_id() const { return queue::proposer_id_of(node_id_, whole_life_); }
  // Sends the queue's unsent commands in order, unless copies sent before its group's term
  // changed are still in doubt (sent now, they could land ahead of those sent again).
  void send_pending(const QueuePtr& queue);
  // Keeps `command` as pending under `seq`, to be sent (by send_pending) and resent until applied.
  void add_pending(const QueuePtr& queue, uint64_t seq, queue::QueueCommand command,
                   CommandDone done, bool relayed);
  // The answer to a copy's proposal: where it was placed, or nothing (to be sent again).
  void placed(const QueuePtr& queue, uint64_t seq, std::optional<LogPosition> position);
  // A copy that cannot be committed any more: its command is to be sent again.
  void lose(Queue& queue, uint64_t seq);
  // A copy of pending command `seq` came before one its proposer numbered before it (the queue
  // refused it as early): it goes again, and so do that proposer's pending ones before it (in
  // order; a copy of one that did commit runs once).
  void send_again_from(Queue& queue, uint64_t seq);
  // Takes a command out of the pending ones (applied, given up, or its queue gone).
  Queue::PendingCommand take_pending(Queue& queue, uint64_t seq);
  // After the entry at `position`: copies placed at or before it, or in an earlier term, were
  // not committed.
  void find_lost_copies(Queue& queue, LogPosition position);
  std::set<uint64_t> waiting_groups_;  // groups with commands pending (resend_lost)

  // The relay (broker_relay.cc). On a node without a member: a command goes to the member's
  // node the queue goes through (relay_member), which is picked again when its link goes down
  // or comes up again (then it sends again what this node's holders hold, as deliveries lost on
  // the old link are); each second the queue's members hear that this node still uses it.
  void relay(const QueuePtr& queue, queue::QueueCommand command, CommandDone done);
  uint64_t relay_member(const QueuePtr& queue);
  void send_relayed(const QueuePtr& queue);
  void tick_relays();
  void send_relay_keepalives(Queue& queue);
  // On a member's node: whether `node` uses the queue (heard from lately), and through here.
  bool relay_user(const Queue& queue, uint64_t node, bool through_here) const;
  // What the node's command `origin` did is sent to it, if it goes through here.
  CommandDone answer_relayed(const Queue& queue, const queue::CommandOrigin& origin);
  // Sends `relayed` to `node`, numbered, each delivery with its body (read back if it left
  // memory), in as many answers as the bodies need.
  void send_relayed_effects(Queue& queue, uint64_t node, queue::RelayedEffects relayed);
  // On a member's node: answers a node's resync once this replica has applied what that node
  // heard of before (RelayUser::after).
  void answer_resync(const QueuePtr& queue, uint64_t node);
  // A command of this node for the holder is waiting for its answer.
  bool relay_commands_pending(const Queue& queue, queue::HolderId holder) const;
  // The replica's state here goes (drop_replica, replica_damaged).
  void forget_replica(const QueuePtr& queue);
  // What a relayed command's answer, from a replica that had applied `applied`, tells of what
  // this node's holders hold.
  void relay_settled(Queue& queue, const queue::QueueCommand& command,
                     const queue::CommandEffects& effects, uint64_t applied);
  // Forgets what this node's holders were answered gone from by `applied` (the relay member
  // has applied that far), and a holder left with nothing and no consumer here.
  void forget_gone(Queue& queue, uint64_t applied);
  void forget_if_idle(Queue& queue, queue::HolderId holder);
  QueueRelay* queue_relay_ = nullptr;
  bool fresh_log_ = false;
  uint64_t incarnation_ = 0;
  std::map<uint64_t, std::weak_ptr<Queue>> relayed_queues_;  // by group: used without a member
  uint64_t undecodable_relay_answers_ = 0;

  uint64_t wall_clock_ms_ = 0;
  uint64_t monotonic_ms_ = 0;
  QueueStore* queue_store_ = nullptr;
  uint64_t queue_snapshot_log_bytes_ = queue_snapshot_log_bytes_default;
  uint64_t queue_snapshot_carried_bytes_ = queue_snapshot_carried_bytes_default;
  std::unordered_map<uint64_t, std::weak_ptr<Queue>> queue_groups_;  // by group
  DefinitionStore* definition_store_ = nullptr;
  struct PendingDefinition {
    uint64_t term = 0;
    DefinitionDone done;
  };
  std::map<uint64_t, PendingDefinition> pending_definitions_;  // by index in the metadata log
  uint64_t definitions_applied_without_store_ = 0;
  bool replaying_definitions_ = false;
  bool clustered_ = false;
  uint64_t last_definition_index_ = 0;  // of the last metadata entry applied
  // Answers this node's changes up to `position` (the one there with `result`, if it is one).
  void answer_definitions(LogPosition position, const DefinitionResult* result);
  // The changes, as apply_definition makes them.
  DefinitionResult apply_declare_exchange(VirtualHost& vhost, const ExchangeDefinition& exchange,
                                          uint64_t index);
  DefinitionResult apply_delete_exchange(VirtualHost& vhost, const DeleteExchange& command);
  DefinitionResult apply_declare_queue(VirtualHost& vhost, const DeclareQueue& command,
                                       uint64_t index);
  DefinitionResult apply_add_node(const ClusterNode& node);
  // Where a new durable queue's (or delayed exchange's) group lives: min(its group size, nodes)
  // nodes of the cluster, the declaring one (`home`) first, then those holding the fewest groups
  // (then the lowest ids), in that order (the first campaigns at once). Decided in the apply,
  // from the model alone: every node places it alike.
  std::vector<uint64_t> place_members(uint64_t home, const amqp::FieldTable& arguments) const;
  // Gives a new durable queue (or a durable delayed exchange's delay queue) its members, as its
  // definition has them or placed anew (a proposed declare: `group` 0, no members), and its group
  // (named after the declare's entry `index` when new): founded here, or joined, if this node
  // holds a member; reached through a member otherwise.
  void open_group(const QueuePtr& queue, uint64_t index, uint64_t group,
                  const std::vector<uint64_t>& members, uint64_t home,
                  const amqp::FieldTable& arguments);
  // How many durable queues' groups each node holds a member of (for place_members).
  std::map<uint64_t, uint64_t> members_hosted_;
  void count_members(const Queue& queue, int delta);
  DefinitionResult apply_forget_node(const std::string& name);
  DefinitionResult apply_set_queue_members(const SetQueueMembers& change);
  std::map<uint64_t, ClusterNode> cluster_nodes_;
  std::function<void()> nodes_listener_;
  // Lets go the publishers waiting for `queue` to drain (it is gone).
  void release_flow_waiters(const Queue& queue);
  // Deletes a queue and tells its consumers. Returns the ready messages it had.
  size_t delete_queue(VirtualHost& vhost, const std::string& name);
  // Puts a dead letter in the vhost's parking queue, which exists.
  void park_into(const QueuePtr& parking, const std::shared_ptr<HandOver>& hand_over,
                 queue::MessagePtr message);
  uint64_t undecodable_entries_ = 0;
  uint64_t unreadable_messages_ = 0;
  // Queue wake-ups by time; stale ones (the queue's wake_at_ms moved) are skipped.
  std::multimap<uint64_t, std::weak_ptr<Queue>> wakeups_;
  std::function<void()> timer_listener_;
  uint64_t memory_high_watermark_bytes_ = 0;
  bool memory_alarm_ = false;
  bool disk_alarm_ = false;
  void unblock_all_if_clear();
  std::vector<BlockedPublisher*> blocked_;
  std::unordered_map<const Queue*, std::vector<BlockedPublisher*>> flow_waiters_;
  uint64_t node_id_ = 1;
  uint64_t life_ = 1;
  uint64_t whole_life_ = 1;  // life_ is it modulo queue::holder_lives
  uint64_t next_holder_ = 1;
  uint32_t open_connections_ = 0;
  ConnectionId next_connection_id_ = 1;
  std::unordered_set<ConnectionId> live_connections_;
  std::mt19937_64 random_;
};

}  // namespace hamq::broker
