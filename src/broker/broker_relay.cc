// The relay: a durable queue used from a node that holds no member of its group (a cluster of
// more nodes than the queue has members, or a queue shrunk off this node).
//
// That node numbers its commands as a member does (broker_proposals.cc) and sends them, over
// the cluster link, to one member's node: the queue's relay member (the first reachable one in
// the queue's list, counting from this node's id, so that the users of a queue spread over its
// members). That node proposes each command, and when its own replica applies the entry it
// answers with what the command did (a publish taken or refused, basic.get's message, a
// consumer attached). Its replica also makes the deliveries to this node's consumers, as it
// makes those to its own, and sends them on. A command not answered within relay_resend_ms goes
// again (then after twice as long, up to 16 s), and after two copies to one member's node
// unanswered (that node may be cut off from its group's leader) through the next reachable one;
// the machine runs each number once, so a copy that did commit and its resend run as one.
//
// Deliveries sent on a link that broke may be lost. So each time the relay member is picked
// anew (its link went down, or came up again), this node asks the new one for every message its
// holders of the queue hold, and hands its consumers those they were never given. That list is
// as the member's replica has it, which may be before a consumer's ack or reject ran: so this
// node knows each message handed to its holders by its delivery count (every hand-out counts
// one more) until the member it goes through has applied its settle, and hands a consumer only
// a later hand-out. A consumer
// the queue no longer knows (its leader cancelled it while this node was cut off) is cancelled
// here too, and its client told (basic.cancel), and detached. The member also detaches the
// holders of this node's earlier lives (a restart), which no replica here can. The member's
// answers are numbered: one lost on the way (a send queue full) shows as a gap, and the node
// resyncs. It answers the keepalives too, so a gap shows within a second.
//
// Each second this node tells every member's node that it still uses the queue, so that the
// group's leader does not take its consumers for those of a node that left (detach_non_members);
// a member's node that has not heard from it for relay_user_timeout_ms stops serving it.
#include <algorithm>

#include "broker/broker.h"

namespace hamq::broker {

namespace {

// The first byte of what a node without a member sends (QueueRelay::forward).
enum class RelayKind : uint8_t {
  uses = 0,         // it uses the queue, through another member's node
  through_you = 1,  // it uses the queue through this one
  command = 2,      // through this one: propose the command that follows
  // Through this one, picked anew: send every message its holders (that follow its life) hold,
  // and detach those of its earlier lives.
  resync = 3,
};

constexpr uint64_t relay_resend_ms = 2'000;
constexpr uint32_t relay_copies_per_member = 2;
// The bodies one answer carries at most (more go in further answers): far below the link's
// bound, and the send queue's.
constexpr uint64_t relay_answer_body_bytes = 8 << 20;
constexpr uint64_t relay_keepalive_ms = 1'000;
constexpr uint64_t relay_user_timeout_ms = 5'000;

std::string relay_data(RelayKind kind, std::string_view rest = {}) {
  std::string data(1, static_cast<char>(kind));
  data.append(rest);
  return data;
}

}  // namespace

void Broker::relay(const QueuePtr& queue, queue::QueueCommand command, CommandDone done) {
  // Its holders here, for the resync after a change of relay member.
  std::visit(
      [&queue](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, queue::AttachCommand>) {
          queue->relay_holders[body.consumer].no_ack = body.no_ack;
        } else if constexpr (std::is_same_v<T, queue::GetCommand>) {
          queue->relay_holders[body.holder];
        } else if constexpr (std::is_same_v<T, queue::DetachCommand>) {
          queue->relay_holders.erase(body.holder);
        } else if constexpr (std::is_same_v<T, queue::SettleCommand>) {
          // Known as handed out until the answer says it is gone, and after (a resync before
          // then may list it); one requeued may come back to the same consumer with that
          // settle's entry, before its answer, counted once more.
          auto holder = queue->relay_holders.find(body.holder);
          if (holder != queue->relay_holders.end()) {
            for (queue::MessageId id : body.ids) {
              auto held = holder->second.delivered.find(id);
              if (held != holder->second.delivered.end()) held->second.settling = true;
            }
          }
        }
      },
      command.body);
  uint64_t seq = queue->next_command_seq++;
  command.origin = queue::CommandOrigin{proposer_id(), seq, 0};
  uint64_t bytes = command_bytes(command);
  queue->pending_bytes += bytes;
  queue->pending_commands.emplace(seq, Queue::PendingCommand{.command = std::move(command),
                                                             .done = std::move(done),
                                                             .bytes = bytes,
                                                             .first_sent_ms = monotonic_ms_});
  queue->unsent.insert(seq);
  relayed_queues_.emplace(queue->group, queue);
  send_relayed(queue);
}

uint64_t Broker::relay_member(const QueuePtr& queue) {
  const std::vector<uint64_t>& members = queue->members;
  auto current = std::find(members.begin(), members.end(), queue->relay_via);
  if (queue->relay_via != 0 && current != members.end() &&
      queue_relay_->link_epoch(queue->relay_via) == queue->relay_epoch) {
    return queue->relay_via;
  }
  // The first reachable from this node's place in the list; after one that stopped answering
  // (relay_epoch 0 with relay_via kept), the first after it.
  size_t start = node_id_;
  if (queue->relay_via != 0 && current != members.end() && queue->relay_epoch == 0) {
    start = static_cast<size_t>(current - members.begin()) + 1;
  }
  uint64_t chosen = 0;
  for (size_t i = 0; i < members.size() && chosen == 0; ++i) {
    uint64_t member = members[(start + i) % members.size()];
    if (member != node_id_ && queue_relay_->link_epoch(member) != 0) chosen = member;
  }
  queue->relay_via = chosen;
  queue->relay_next_answer = 0;  // the new one's numbering
  queue->relay_epoch = chosen == 0 ? 0 : queue_relay_->link_epoch(chosen);
  if (chosen == 0) return 0;
  // What was sent before and not answered goes again, to the new member's node; and that node
  // sends again what this node's holders hold (deliveries on the old link may be lost).
  for (auto& [seq, pending] : queue->pending_commands) {
    pending.in_flight = false;
    pending.relay_copies = 0;
    queue->unsent.insert(seq);
  }
  std::vector<uint8_t> holders;
  amqp::WireWriter out(holders);
  out.u64(life_);
  out.u64(queue->relay_applied);
  out.u32(static_cast<uint32_t>(queue->relay_holders.size()));
  for (const auto& [holder, delivered] : queue->relay_holders) out.u64(holder.value);
  queue_relay_->forward(
      chosen, queue->group,
      relay_data(RelayKind::resync,
                 {reinterpret_cast<const char*>(holders.data()), holders.size()}));
  send_relay_keepalives(*queue);
  return chosen;
}

void Broker::send_relayed(const QueuePtr& queue) {
  uint64_t via = relay_member(queue);
  if (via == 0 || queue->unsent.empty()) return;
  std::vector<uint64_t> sending(queue->unsent.begin(), queue->unsent.end());
  queue->unsent.clear();
  for (uint64_t seq : sending) {
    auto it = queue->pending_commands.find(seq);
    if (it == queue->pending_commands.end()) continue;
    Queue::PendingCommand& pending = it->second;
    pending.command.origin.floor = queue->own_floor();
    pending.in_flight = true;
    pending.relayed_ms = monotonic_ms_;
    ++pending.relay_copies;
    queue_relay_->forward(via, queue->group,
                          relay_data(RelayKind::command, queue::encode_command(pending.command)));
  }
}

void Broker::send_relay_keepalives(Queue& queue) {
  for (uint64_t member : queue.members) {
    if (member == node_id_) continue;
    queue_relay_->forward(
        member, queue.group,
        relay_data(member == queue.relay_via ? RelayKind::through_you : RelayKind::uses));
  }
  queue.relay_sent_ms = monotonic_ms_;
}

void Broker::tick_relays() {
  if (queue_relay_ == nullptr) return;
  for (auto it = relayed_queues_.begin(); it != relayed_queues_.end();) {
    QueuePtr queue = it->second.lock();
    bool member_here = queue && std::find(queue->members.begin(), queue->members.end(), node_id_) !=
                                    queue->members.end();
    if (!queue || member_here) {
      if (queue) {
        // Made a member: what waits goes through its own replica from now on.
        for (auto& [seq, pending] : queue->pending_commands) {
          pending.in_flight = false;
          queue->unsent.insert(seq);
        }
        if (!queue->pending_commands.empty()) waiting_groups_.insert(queue->group);
      }
      it = relayed_queues_.erase(it);
      continue;
    }
    // Not committed for command_give_up_ms: given up, not done (a publish is nacked).
    while (!queue->pending_commands.empty()) {
      auto head = queue->pending_commands.begin();
      if (monotonic_ms_ - head->second.first_sent_ms < command_give_up_ms) break;
      Queue::PendingCommand given_up = take_pending(*queue, head->first);
      if (given_up.done) given_up.done(queue, nullptr);
    }
    // Not answered for long: sent again (the machine runs a number once), each time after
    // twice as long; after relay_copies_per_member copies, through the next member's node.
    bool rotate = false;
    for (auto& [seq, pending] : queue->pending_commands) {
      uint64_t wait_ms = relay_resend_ms << std::min<uint32_t>(pending.relay_copies - 1, 3);
      if (pending.in_flight && monotonic_ms_ - pending.relayed_ms >= wait_ms) {
        pending.in_flight = false;
        queue->unsent.insert(seq);
        rotate = rotate || pending.relay_copies >= relay_copies_per_member;
      }
    }
    if (rotate) queue->relay_epoch = 0;  // picked anew, after the one that did not answer
    send_relayed(queue);
    if (queue->pending_commands.empty() && queue->relay_holders.empty()) {
      it = relayed_queues_.erase(it);  // not used here any more: its members forget this node
      continue;
    }
    if (queue->relay_via != 0 && monotonic_ms_ - queue->relay_sent_ms >= relay_keepalive_ms) {
      send_relay_keepalives(*queue);
    }
    ++it;
  }
}

void Broker::relay_answered(uint64_t from, uint64_t group, std::string_view data) {
  auto it = relayed_queues_.find(group);
  QueuePtr queue = it == relayed_queues_.end() ? nullptr : it->second.lock();
  if (!queue) return;
  auto relayed = queue::decode_relayed(data);
  if (!relayed.ok()) {
    ++undecodable_relay_answers_;
    return;
  }
  // (Every member applies the same log: what any says it applied, this node heard of.)
  queue->relay_applied = std::max(queue->relay_applied, relayed->applied);
  // Deliveries only from the member's node the queue goes through now: another's (the one
  // before) would hand out the same messages again.
  if (from == queue->relay_via) {
    if (queue->relay_next_answer != 0 && relayed->number != queue->relay_next_answer) {
      queue->relay_epoch = UINT64_MAX;  // an answer was lost: resync (same member, same place)
    }
    queue->relay_next_answer = relayed->number + 1;
    queue->relay_counts = {relayed->ready, relayed->consumers};
    for (const queue::Delivery& delivery : relayed->effects.deliveries) {
      auto holder = queue->relay_holders.find(delivery.holder);
      auto sink = sinks_.find(delivery.holder.value);
      if (holder == queue->relay_holders.end() || sink == sinks_.end()) continue;
      // Given before (listed again by a resync, from a replica that had not applied its
      // settle yet): only a later hand-out goes to the consumer.
      auto held = holder->second.delivered.find(delivery.id);
      if (held != holder->second.delivered.end() &&
          delivery.delivery_count <= held->second.delivery_count) {
        continue;
      }
      if (!holder->second.no_ack) {
        holder->second.delivered[delivery.id] = {.delivery_count = delivery.delivery_count};
      }
      sink->second->deliver(queue, delivery);
    }
    for (queue::HolderId cancelled : relayed->cancelled) {
      // Only a consumer here (a channel's basic.get holder is not cancelled), and not one with
      // a command still on its way (its attach, a get: not known there yet).
      auto sink = sinks_.find(cancelled.value);
      if (sink == sinks_.end() || !queue->relay_holders.contains(cancelled) ||
          relay_commands_pending(*queue, cancelled)) {
        continue;
      }
      sink->second->consumer_cancelled_by_broker(cancelled);
      // Gone there; made sure of (a member that lags may not know it yet): what it holds is
      // ready again.
      execute(queue, command(queue::CancelCommand{cancelled}));
      execute(queue, command(queue::DetachCommand{cancelled}));
    }
  }
  if (relayed->seq != 0 && queue->pending_commands.contains(relayed->seq)) {
    Queue::PendingCommand done = take_pending(*queue, relayed->seq);
    const queue::CommandEffects& effects = relayed->effects;
    // A copy applied after another (sent again, to the member's node picked anew): the first
    // did it. A consumer's attach did attach it.
    if (effects.duplicate && std::holds_alternative<queue::AttachCommand>(done.command.body)) {
      relayed->effects.attached = queue::AttachResult::attached;
    }
    relay_settled(*queue, done.command, effects, relayed->applied);
    if (done.done) done.done(queue, &relayed->effects);
  }
  // What the member the queue goes through has applied, it lists no more (nor does one picked
  // after it: its resync starts there).
  if (from == queue->relay_via) forget_gone(*queue, relayed->applied);
  if (!flow_waiters_.empty()) check_flow(*queue);
}

void Broker::forget_gone(Queue& queue, uint64_t applied) {
  while (!queue.relay_gone.empty() && queue.relay_gone.begin()->first <= applied) {
    auto [gone_at, which] = *queue.relay_gone.begin();
    queue.relay_gone.erase(queue.relay_gone.begin());
    auto holder = queue.relay_holders.find(which.first);
    if (holder == queue.relay_holders.end()) continue;
    auto held = holder->second.delivered.find(which.second);
    if (held != holder->second.delivered.end() && held->second.gone_at == gone_at) {
      holder->second.delivered.erase(held);
    }
    forget_if_idle(queue, which.first);
  }
}

void Broker::forget_if_idle(Queue& queue, queue::HolderId holder) {
  // A holder of nothing without a consumer here (a channel's basic.get) is forgotten.
  auto it = queue.relay_holders.find(holder);
  if (it != queue.relay_holders.end() && it->second.delivered.empty() &&
      !sinks_.contains(holder.value) && !relay_commands_pending(queue, holder)) {
    queue.relay_holders.erase(it);
  }
}

void Broker::relay_settled(Queue& queue, const queue::QueueCommand& command,
                           const queue::CommandEffects& effects, uint64_t applied) {
  // What this node's holders hold, as far as its commands' answers show.
  queue::HolderId holder;
  if (const auto* settle = std::get_if<queue::SettleCommand>(&command.body)) {
    holder = settle->holder;
    auto it = queue.relay_holders.find(holder);
    if (it != queue.relay_holders.end()) {
      // Gone from it by `applied` (the answer's replica had run the settle); not one handed to
      // it again since (requeued, and back with that entry).
      for (queue::MessageId id : settle->ids) {
        auto held = it->second.delivered.find(id);
        if (held == it->second.delivered.end() || !held->second.settling) continue;
        held->second.settling = false;
        held->second.gone_at = applied;
        queue.relay_gone.emplace(applied, std::pair{holder, id});
      }
    }
  } else if (const auto* get = std::get_if<queue::GetCommand>(&command.body)) {
    holder = get->holder;
    if (effects.got && !get->no_ack) {
      queue.relay_holders[holder].delivered[effects.got->id] = {.delivery_count =
                                                                    effects.got->delivery_count};
    }
  } else if (const auto* attach = std::get_if<queue::AttachCommand>(&command.body)) {
    if (effects.attached != queue::AttachResult::attached) {
      queue.relay_holders.erase(attach->consumer);
    }
    return;
  } else {
    return;
  }
  forget_if_idle(queue, holder);
}

bool Broker::relay_commands_pending(const Queue& queue, queue::HolderId holder) const {
  auto of_holder = [holder](const auto& body) {
    using T = std::decay_t<decltype(body)>;
    if constexpr (std::is_same_v<T, queue::AttachCommand> ||
                  std::is_same_v<T, queue::CancelCommand> ||
                  std::is_same_v<T, queue::SuspendCommand>) {
      return body.consumer == holder;
    } else if constexpr (std::is_same_v<T, queue::DetachCommand> ||
                         std::is_same_v<T, queue::SettleCommand> ||
                         std::is_same_v<T, queue::GetCommand>) {
      return body.holder == holder;
    } else {
      return false;
    }
  };
  return std::any_of(
      queue.pending_commands.begin(), queue.pending_commands.end(),
      [&](const auto& one) { return std::visit(of_holder, one.second.command.body); });
}

bool Broker::relayed(const Queue& queue) const {
  return queue.group != 0 && queue_relay_ != nullptr && !queue.members.empty() &&
         std::find(queue.members.begin(), queue.members.end(), node_id_) == queue.members.end();
}

size_t Broker::ready_count(const Queue& queue) const {
  return relayed(queue) ? queue.relay_counts.first : queue.machine.ready_count();
}

size_t Broker::consumer_count(const Queue& queue) const {
  return relayed(queue) ? queue.relay_counts.second : queue.machine.consumer_count();
}

bool Broker::relay_user(const Queue& queue, uint64_t node, bool through_here) const {
  auto user = queue.relay_users.find(node);
  return user != queue.relay_users.end() &&
         monotonic_ms_ - user->second.heard_ms < relay_user_timeout_ms &&
         (!through_here || user->second.through_here);
}

namespace {

// A command a node without a member may relay: its own holders' only, and none of the leader's
// (handing over, which only the queue's leader proposes).
bool relayable(const queue::QueueCommand& command, uint64_t from) {
  return std::visit(
      [from](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, queue::AttachCommand> ||
                      std::is_same_v<T, queue::CancelCommand> ||
                      std::is_same_v<T, queue::SuspendCommand>) {
          return body.consumer.node() == from;
        } else if constexpr (std::is_same_v<T, queue::DetachCommand> ||
                             std::is_same_v<T, queue::SettleCommand> ||
                             std::is_same_v<T, queue::GetCommand>) {
          return body.holder.node() == from;
        } else {
          return !std::is_same_v<T, queue::HandedOverCommand>;
        }
      },
      command.body);
}

}  // namespace

void Broker::relay_forwarded(uint64_t from, uint64_t group, std::string_view data) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue || queue_store_ == nullptr || queue_relay_ == nullptr || data.empty() ||
      from == node_id_ || static_cast<uint8_t>(data.front()) > uint8_t(RelayKind::resync)) {
    return;
  }
  auto kind = static_cast<RelayKind>(data.front());
  std::string_view rest = data.substr(1);
  Queue::RelayUser& user = queue->relay_users[from];
  user.heard_ms = monotonic_ms_;
  user.through_here = kind != RelayKind::uses;
  if (kind == RelayKind::through_you) {
    send_relayed_effects(*queue, from, {});  // numbered: a gap before it shows
    answer_resync(queue, from);              // (one waiting for a snapshot this replica took)
  } else if (kind == RelayKind::command) {
    std::string command(rest);
    auto decoded = queue::decode_command(command);
    // Only that node's own commands (numbered as its, for its holders): another's would be
    // answered to it.
    if (!decoded.ok() || decoded->origin.proposer >> queue::holder_node_shift != from ||
        !relayable(*decoded, from)) {
      return;
    }
    // Proposed as this node's own commands are, in order with them, sent again when a copy is
    // lost (so a later command of that node cannot land before an earlier one whose copy a
    // leader change lost); a copy of one waiting here already is not proposed twice.
    std::pair<uint64_t, uint64_t> key{decoded->origin.proposer, decoded->origin.seq};
    if (queue->relayed_pending.contains(key)) return;
    decoded->time_ms = wall_clock_ms_;  // this node's time, as the leader's will be if it is not
    uint64_t seq = queue->next_relayed_key++;
    queue->relayed_pending.emplace(key, seq);
    add_pending(queue, seq, std::move(*decoded), {}, /*relayed=*/true);
    send_pending(queue);
  } else if (kind == RelayKind::resync) {
    amqp::WireReader in({reinterpret_cast<const uint8_t*>(rest.data()), rest.size()});
    uint64_t life = in.u64();
    uint64_t after = in.u64();
    uint32_t count = in.u32();
    if (in.failed() || uint64_t{count} * 8 != in.remaining()) return;
    std::set<queue::HolderId> holders;
    for (uint32_t i = 0; i < count; ++i) {
      queue::HolderId holder{in.u64()};
      if (holder.node() == from) holders.insert(holder);
    }
    user.after = after;
    user.life = life;
    user.resync = std::move(holders);
    answer_resync(queue, from);
  }
}

void Broker::answer_resync(const QueuePtr& queue, uint64_t node) {
  auto user = queue->relay_users.find(node);
  // Not before this replica has what the node heard of from the member before (a replica that
  // lags would hand out again what that one did).
  if (user == queue->relay_users.end() || !user->second.resync ||
      queue->applied_index < user->second.after) {
    return;
  }
  std::set<queue::HolderId> holders = std::move(*user->second.resync);
  user->second.resync.reset();
  uint64_t life = user->second.life;
  queue::RelayedEffects relayed;
  relayed.effects.deliveries = queue->machine.held_by(holders);
  std::vector<queue::HolderId> known = queue->machine.holder_ids();
  for (queue::HolderId holder : holders) {
    if (std::find(known.begin(), known.end(), holder) == known.end()) {
      relayed.cancelled.push_back(holder);
    }
  }
  send_relayed_effects(*queue, node, std::move(relayed));
  // What that node's earlier lives held is ready again (a node without a member of the queue
  // has no replica to do it at its start, as members do).
  auto earlier = [node, life](queue::HolderId holder) {
    return holder.node() == node && holder.life() != life;
  };
  for (queue::QueueCommand& one : detach_commands(*queue, earlier)) {
    execute(queue, std::move(one));
  }
}

CommandDone Broker::answer_relayed(const Queue& queue, const queue::CommandOrigin& origin) {
  uint64_t node = origin.proposer >> queue::holder_node_shift;
  if (origin.proposer == 0 || node == node_id_ || !relay_user(queue, node, true)) return {};
  return [this, node, seq = origin.seq](const QueuePtr& applied,
                                        const queue::CommandEffects* effects) {
    if (effects == nullptr || effects->early) return;  // (its member sends it again)
    queue::RelayedEffects relayed;
    relayed.seq = seq;
    relayed.effects.enqueued = effects->enqueued;
    relayed.effects.attached = effects->attached;
    relayed.effects.got = effects->got;
    relayed.effects.count = effects->count;
    relayed.effects.duplicate = effects->duplicate;
    send_relayed_effects(*applied, node, std::move(relayed));
  };
}

void Broker::send_relayed_effects(Queue& queue, uint64_t node, queue::RelayedEffects relayed) {
  auto with_body = [&](queue::Delivery& delivery) {
    if (!delivery.message) delivery.message = load_message(queue, delivery.stored_at);
    return delivery.message != nullptr;
  };
  // A body that cannot be read is not sent: the message stays with its holder until it goes
  // back (as a consumer here would not be given it either).
  if (relayed.effects.got && !with_body(*relayed.effects.got)) relayed.effects.got.reset();
  std::vector<queue::Delivery> deliveries = std::move(relayed.effects.deliveries);
  relayed.effects.deliveries.clear();
  relayed.ready = queue.machine.ready_count();
  relayed.consumers = queue.machine.consumer_count();
  relayed.applied = queue.applied_index;
  Queue::RelayUser& user = queue.relay_users[node];
  uint64_t bytes = 0;
  auto send = [&] {
    relayed.number = ++user.answers;
    queue_relay_->answer(node, queue.group, queue::encode_relayed(relayed));
    relayed.seq = 0;  // the command's answer is the first; the rest carry deliveries only
    relayed.effects = {};
    relayed.cancelled.clear();
    bytes = 0;
  };
  for (queue::Delivery& delivery : deliveries) {
    if (!with_body(delivery)) continue;
    if (bytes > 0 && bytes + delivery.message->body.size() > relay_answer_body_bytes) send();
    bytes += delivery.message->body.size();
    relayed.effects.deliveries.push_back(std::move(delivery));
  }
  send();
}

}  // namespace hamq::broker
