// The commands a node proposes to its durable queues' groups, from the proposal to the answer.
//
// Each command is numbered (QueueCommand::origin: this node's life, a count per queue) and
// waits in Queue::pending_commands until its entry comes back applied through this node's own
// replica, matched by its number. A copy can be lost on the way: its leader died before it
// committed (another leader's entry takes its index, or a later term's entries follow it), or
// the forward went unanswered. Such a command is sent again, to whichever member leads now (at
// once when an applied entry shows it lost, else on the log's next tick: Broker::resend_lost).
// Sending again is safe because the queue's machine admits each number once: a copy that did
// commit after all and its resend both in the log run as one (RabbitMQ's enqueuer tracking does
// the same for its quorum queues). So a publisher on a surviving node sees a pause, never an
// error or a duplicate, when a leader dies; it is nacked only if no copy commits within
// command_give_up_ms.
//
// Order: copies sent before the group's term changed are in doubt until the new term's first
// entry shows what became of them; new commands wait behind them, so the resent ones keep
// their place. And the machine runs a proposer's numbers only in order: a copy that lands
// before one numbered before it is refused as early, and it goes again with those before it
// (send_again_from).
#include "broker/broker.h"

#include <algorithm>

namespace hamq::broker {

namespace {

void count_down(std::map<uint64_t, size_t>& counts, uint64_t key) {
  auto it = counts.find(key);
  if (it != counts.end() && --it->second == 0) counts.erase(it);
}

}  // namespace

uint64_t Broker::command_bytes(const queue::QueueCommand& command) {
  constexpr uint64_t overhead = 64;
  if (const auto* enqueue = std::get_if<queue::EnqueueCommand>(&command.body)) {
    return overhead + enqueue->message->body.size();
  }
  return overhead;
}

void Broker::execute(const QueuePtr& queue, queue::QueueCommand command, CommandDone done) {
  if (queue->group == 0 || queue_store_ == nullptr) {
    run(queue, command, done, 0);
    return;
  }
  bool member_here =
      queue->members.empty() ||
      std::find(queue->members.begin(), queue->members.end(), node_id_) != queue->members.end();
  if (!member_here && queue_relay_ != nullptr) {
    // Its group lives on other nodes: the command goes through one of them.
    relay(queue, std::move(command), std::move(done));
    return;
  }
  if (!member_here || !queue_groups_.contains(queue->group)) {
    // No replica here to complete it (and no relay, or a member not founded yet).
    if (done) done(queue, nullptr);
    return;
  }
  uint64_t seq = queue->next_command_seq++;
  command.origin = queue::CommandOrigin{proposer_id(), seq, 0};
  add_pending(queue, seq, std::move(command), std::move(done), /*relayed=*/false);
  send_pending(queue);
}

void Broker::add_pending(const QueuePtr& queue, uint64_t seq, queue::QueueCommand command,
                         CommandDone done, bool relayed) {
  uint64_t bytes = command_bytes(command);
  queue->pending_bytes += bytes;
  queue->pending_commands.emplace(seq, Queue::PendingCommand{.command = std::move(command),
                                                             .done = std::move(done),
                                                             .bytes = bytes,
                                                             .first_sent_ms = monotonic_ms_,
                                                             .relayed = relayed});
  queue->unsent.insert(seq);
  waiting_groups_.insert(queue->group);
}

void Broker::send_pending(const QueuePtr& queue) {
  if (queue->unsent.empty() || queue_store_ == nullptr) return;
  uint64_t term = queue_store_->current_term(queue->group);
  auto before = [term](const std::map<uint64_t, size_t>& terms) {
    return !terms.empty() && terms.begin()->first < term;
  };
  if (before(queue->placed_terms) || before(queue->sent_terms)) return;
  std::vector<uint64_t> sending(queue->unsent.begin(), queue->unsent.end());
  queue->unsent.clear();
  for (uint64_t seq : sending) {
    auto it = queue->pending_commands.find(seq);
    if (it == queue->pending_commands.end()) continue;
    Queue::PendingCommand& pending = it->second;
    // Every number below the lowest still pending is settled: never sent again. (A relayed
    // command carries its own node's floor.)
    if (!pending.relayed) pending.command.origin.floor = queue->own_floor();
    pending.in_flight = true;
    pending.term = term;
    ++queue->sent_terms[term];
    // The answer may come before propose returns; it never sends (no recursion).
    queue_store_->propose(
        queue->group, queue::encode_command(pending.command),
        [this, weak = std::weak_ptr<Queue>(queue), seq](std::optional<LogPosition> position) {
          if (QueuePtr alive = weak.lock()) placed(alive, seq, position);
        });
  }
}

void Broker::placed(const QueuePtr& queue, uint64_t seq, std::optional<LogPosition> position) {
  auto it = queue->pending_commands.find(seq);
  // Applied already (another copy), or given up with its queue.
  if (it == queue->pending_commands.end() || !it->second.in_flight) return;
  Queue::PendingCommand& pending = it->second;
  pending.in_flight = false;
  count_down(queue->sent_terms, pending.term);
  // Not placed; or placed where this replica has applied another entry already, or in a term
  // that a later one has replaced: not committed.
  if (!position || position->index <= queue->applied_index ||
      position->term < queue->applied_term) {
    lose(*queue, seq);
    return;
  }
  if (auto earlier = queue->placed_at.find(position->index); earlier != queue->placed_at.end()) {
    // An earlier leader placed another of ours there, which this later term's entry replaced.
    lose(*queue, earlier->second);
  }
  pending.term = position->term;
  pending.placed_index = position->index;
  ++queue->placed_terms[position->term];
  queue->placed_at[position->index] = seq;
}

void Broker::lose(Queue& queue, uint64_t seq) {
  auto it = queue.pending_commands.find(seq);
  if (it == queue.pending_commands.end()) return;
  Queue::PendingCommand& pending = it->second;
  if (pending.placed_index != 0) {
    queue.placed_at.erase(pending.placed_index);
    count_down(queue.placed_terms, pending.term);
    pending.placed_index = 0;
  }
  queue.unsent.insert(seq);
}

void Broker::send_again_from(Queue& queue, uint64_t seq) {
  // Those of the same proposer (this node, or the relaying node) numbered up to it.
  bool relayed = seq >= relayed_command_key_base;
  for (auto& [number, pending] : queue.pending_commands) {
    if (number > seq) break;
    if ((number >= relayed_command_key_base) != relayed) continue;
    if (pending.in_flight) {
      // Its placement, when it comes, is not waited for (a copy sent again is).
      pending.in_flight = false;
      count_down(queue.sent_terms, pending.term);
    }
    lose(queue, number);
  }
  waiting_groups_.insert(queue.group);
}

Queue::PendingCommand Broker::take_pending(Queue& queue, uint64_t seq) {
  auto node = queue.pending_commands.extract(seq);
  Queue::PendingCommand& pending = node.mapped();
  if (pending.placed_index != 0) {
    queue.placed_at.erase(pending.placed_index);
    count_down(queue.placed_terms, pending.term);
  } else if (pending.in_flight) {
    count_down(queue.sent_terms, pending.term);
  }
  queue.unsent.erase(seq);
  queue.pending_bytes -= pending.bytes;
  if (pending.relayed) {
    queue.relayed_pending.erase({pending.command.origin.proposer, pending.command.origin.seq});
  }
  return std::move(pending);
}

void Broker::find_lost_copies(Queue& queue, LogPosition position) {
  while (!queue.placed_at.empty() && queue.placed_at.begin()->first <= position.index) {
    lose(queue, queue.placed_at.begin()->second);
  }
  // Entries after one of a later term are of that term or later (Raft's log matching): a copy
  // placed in an earlier term can never commit. (Rare: only after a leader change.)
  if (!queue.placed_terms.empty() && queue.placed_terms.begin()->first < position.term) {
    std::vector<uint64_t> lost;
    for (const auto& [index, seq] : queue.placed_at) {
      if (queue.pending_commands.at(seq).term < position.term) lost.push_back(seq);
    }
    for (uint64_t seq : lost) lose(queue, seq);
  }
}

void Broker::resend_lost() {
  for (auto group = waiting_groups_.begin(); group != waiting_groups_.end();) {
    auto it = queue_groups_.find(*group);
    QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
    if (!queue || queue->pending_commands.empty()) {
      group = waiting_groups_.erase(group);
      continue;
    }
    // Not committed for command_give_up_ms (lost and never placed again, or placed in a log
    // that does not commit): given up, not done. (A copy that commits later is refused: the
    // floor of the next command passes it.)
    while (!queue->pending_commands.empty()) {
      auto head = queue->pending_commands.begin();
      if (monotonic_ms_ - head->second.first_sent_ms < command_give_up_ms) break;
      Queue::PendingCommand given_up = take_pending(*queue, head->first);
      if (given_up.done) given_up.done(queue, nullptr);
    }
    send_pending(queue);
    ++group;
  }
  tick_relays();
}

void Broker::finish_pending_commands(const QueuePtr& queue, const queue::CommandEffects* effects) {
  auto pending = std::move(queue->pending_commands);
  queue->pending_commands.clear();
  queue->pending_bytes = 0;
  queue->unsent.clear();
  queue->relayed_pending.clear();
  queue->placed_at.clear();
  queue->placed_terms.clear();
  queue->sent_terms.clear();
  for (auto& [seq, command] : pending) {
    if (command.done) command.done(queue, effects);
  }
}

}  // namespace hamq::broker
