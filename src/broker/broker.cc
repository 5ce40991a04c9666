#include "broker/broker.h"

namespace hamq::broker {

Broker::Broker(const std::vector<std::string>& virtual_hosts, uint64_t seed) : random_(seed) {
  for (const auto& name : virtual_hosts) {
    virtual_hosts_.emplace(name, std::make_unique<VirtualHost>(name, &memory_used_bytes_));
  }
}

VirtualHost* Broker::find_virtual_host(const std::string& name) {
  auto it = virtual_hosts_.find(name);
  return it == virtual_hosts_.end() ? nullptr : it->second.get();
}

void Broker::update_memory_alarm() {
  if (memory_high_watermark_bytes_ == 0) return;
  if (!memory_alarm_ && memory_used_bytes_ > memory_high_watermark_bytes_) {
    memory_alarm_ = true;
  } else if (memory_alarm_ && memory_used_bytes_ < memory_high_watermark_bytes_ / 10 * 9) {
    memory_alarm_ = false;
    unblock_all_if_clear();
  }
}

void Broker::set_disk_alarm(bool raised) {
  if (raised == disk_alarm_) return;
  disk_alarm_ = raised;
  if (!raised) unblock_all_if_clear();
}

void Broker::unblock_all_if_clear() {
  if (publishing_blocked()) return;
  auto blocked = std::move(blocked_);
  blocked_.clear();
  for (BlockedPublisher* publisher : blocked) publisher->unblock();
}

void Broker::remove_blocked(BlockedPublisher* publisher) {
  std::erase(blocked_, publisher);
}

std::string Broker::random_name(std::string_view prefix) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string name(prefix);
  for (int i = 0; i < 22; ++i) name += alphabet[random_() % 64];
  return name;
}

void Broker::dispatch(const QueuePtr& queue, const std::vector<queue::Delivery>& deliveries) {
  // Deliveries to the consumers of nodes without a member that go through this one.
  std::map<uint64_t, queue::RelayedEffects> relayed;
  for (const auto& delivery : deliveries) {
    auto it = sinks_.find(delivery.holder.value);
    if (it == sinks_.end()) {
      uint64_t node = delivery.holder.node();
      // (Not those of entries the node had from the member it went through before.)
      if (node != node_id_ && queue_relay_ != nullptr && relay_user(*queue, node, true) &&
          queue->applied_index > queue->relay_users[node].after) {
        relayed[node].effects.deliveries.push_back(delivery);
      }
      continue;
    }
    if (delivery.message) {
      it->second->deliver(queue, delivery);
      continue;
    }
    queue::Delivery loaded = delivery;  // its body waited on disk
    loaded.message = load_message(*queue, delivery.stored_at);
    if (loaded.message) it->second->deliver(queue, loaded);
  }
  for (auto& [node, effects] : relayed) send_relayed_effects(*queue, node, std::move(effects));
  if (!flow_waiters_.empty()) check_flow(*queue);
  if (queue->machine.has_dead_letters()) dead_letter(queue);
  schedule(queue);
}

namespace {

// When an unused queue with x-expires is to be deleted, if it is unused now.
std::optional<uint64_t> queue_expiry_ms(const Queue& queue) {
  if (!queue.expires_ms || queue.machine.consumer_count() > 0) return std::nullopt;
  return queue.last_used_ms + *queue.expires_ms;
}

}  // namespace

void Broker::queue_used(const QueuePtr& queue) {
  queue->last_used_ms = monotonic_ms_;
  schedule(queue);
}

void Broker::schedule(const QueuePtr& queue) {
  if (!runs_effects(*queue)) return;  // its leader's timers serve it
  std::optional<uint64_t> at_ms;
  if (std::optional<uint64_t> expiry = queue->machine.next_expiry_ms()) {
    // A wall-clock time: due after as long on the monotonic clock as it is away now, or sooner,
    // so that a step of the system clock meanwhile is seen within a minute.
    uint64_t away_ms = *expiry > wall_clock_ms_ ? *expiry - wall_clock_ms_ : 0;
    at_ms = monotonic_ms_ + std::min(away_ms, wall_clock_recheck_ms);
  }
  if (auto expiry = queue_expiry_ms(*queue)) at_ms = std::min(at_ms.value_or(*expiry), *expiry);
  if (queue->dead_letter_retry_at_ms != UINT64_MAX) {
    at_ms =
        std::min(at_ms.value_or(queue->dead_letter_retry_at_ms), queue->dead_letter_retry_at_ms);
  }
  if (!at_ms || *at_ms >= queue->wake_at_ms) return;
  bool earliest = wakeups_.empty() || *at_ms < wakeups_.begin()->first;
  queue->wake_at_ms = *at_ms;
  wakeups_.emplace(*at_ms, queue);
  if (earliest && timer_listener_) timer_listener_();
}

uint64_t Broker::next_timer_ms() const {
  return wakeups_.empty() ? UINT64_MAX : wakeups_.begin()->first;
}

void Broker::on_timer() {
  while (!wakeups_.empty() && wakeups_.begin()->first <= monotonic_ms_) {
    auto [at_ms, weak] = *wakeups_.begin();
    wakeups_.erase(wakeups_.begin());
    QueuePtr queue = weak.lock();
    if (!queue || queue->wake_at_ms != at_ms) continue;  // deleted, or rescheduled
    queue->wake_at_ms = UINT64_MAX;
    if (!runs_effects(*queue)) {
      // No longer its leader: the new one serves it, and offers its dead letters again.
      drop_retained_dead_letters(*queue);
      continue;
    }
    auto expiry = queue_expiry_ms(*queue);
    if (expiry && *expiry <= monotonic_ms_ && queue->vhost != nullptr &&
        queue->vhost->find_queue(queue->name) == queue) {
      // Unused for its x-expires: deleted, its messages with it (not dead-lettered).
      propose_queue_delete(queue);
      continue;
    }
    if (queue->dead_letter_retry_at_ms <= monotonic_ms_) retry_dead_letters(queue);
    std::optional<uint64_t> due = queue->machine.next_expiry_ms();
    if (!due || *due > wall_clock_ms_) {
      // No message due by the wall clock (a look again, or a clock stepped back): nothing to
      // propose, the next wake-up is set again.
      schedule(queue);
      continue;
    }
    // Delivers, dead-letters and schedules the next wake-up (once applied, for a durable queue).
    execute(queue, command(queue::ExpireCommand{}));
  }
  flush_hand_overs();  // retried dead letters that in-memory queues took
}

void Broker::release_flow_waiters(const Queue& queue) {
  auto waiters = flow_waiters_.find(&queue);
  if (waiters == flow_waiters_.end()) return;
  auto released = std::move(waiters->second);
  flow_waiters_.erase(waiters);
  for (BlockedPublisher* publisher : released) publisher->flow_released(&queue);
}

void Broker::wait_for_flow(BlockedPublisher* publisher, const Queue* queue) {
  flow_waiters_[queue].push_back(publisher);
}

void Broker::check_flow(const Queue& queue) {
  auto it = flow_waiters_.find(&queue);
  if (it == flow_waiters_.end()) return;
  if (queue.pending_commands.size() >= queue_flow_pending_low ||
      queue.pending_bytes >= queue_flow_pending_bytes_low) {
    return;
  }
  bool backlog =
      queue.machine.ready_count() >= queue_flow_ready_low && queue.machine.consumer_count() > 0;
  std::vector<BlockedPublisher*> released;
  std::erase_if(it->second, [&](BlockedPublisher* publisher) {
    if (backlog && !publisher->consumes_from(queue)) return false;
    released.push_back(publisher);
    return true;
  });
  if (it->second.empty()) flow_waiters_.erase(it);
  for (BlockedPublisher* publisher : released) publisher->flow_released(&queue);
}

void Broker::forget_publisher(BlockedPublisher* publisher) {
  std::erase(blocked_, publisher);
  for (auto it = flow_waiters_.begin(); it != flow_waiters_.end();) {
    std::erase(it->second, publisher);
    it = it->second.empty() ? flow_waiters_.erase(it) : std::next(it);
  }
}

std::string Broker::register_reply_consumer(ConsumerSink* sink) {
  std::string name = random_name(reply_to_prefix);
  reply_consumers_[name] = sink;
  return name;
}

ConsumerSink* Broker::find_reply_consumer(const std::string& name) const {
  auto it = reply_consumers_.find(name);
  return it == reply_consumers_.end() ? nullptr : it->second;
}

void Broker::delete_if_unused(const QueuePtr& queue, std::function<void()> then) {
  if (queue->auto_delete && queue->had_consumer && relayed(*queue)) {
    // Its consumers are counted on other nodes: asked (a command that changes nothing, after
    // the cancel that led here), and deleted if that count is none.
    execute(queue, command(queue::ExpireCommand{}),
            [this, then = std::move(then)](const QueuePtr& asked,
                                           const queue::CommandEffects* effects) mutable {
              if (effects != nullptr && asked->relay_counts.second == 0) {
                propose_queue_delete(asked, std::move(then));
              } else if (then) {
                then();
              }
            });
    return;
  }
  if (queue->auto_delete && queue->had_consumer && queue->machine.consumer_count() == 0) {
    propose_queue_delete(queue, std::move(then));
  } else if (then) {
    then();
  }
}

void Broker::propose_queue_delete(const QueuePtr& queue, std::function<void()> then) {
  if (queue->deleting || queue->vhost == nullptr ||
      queue->vhost->find_queue(queue->name) != queue) {
    if (then) then();
    return;
  }
  queue->deleting = true;
  change_definitions(
      DeleteQueue{queue->vhost->name(), queue->name},
      [weak = std::weak_ptr<Queue>(queue), then = std::move(then)](const DefinitionResult& result) {
        // Not made (the log failed): a later trigger may propose it again.
        if (QueuePtr alive = weak.lock(); alive && !result.ok()) {
          alive->deleting = false;
        }
        if (then) then();
      });
}

size_t Broker::delete_queue(VirtualHost& vhost, const std::string& name) {
  QueuePtr queue = vhost.remove_queue(name);
  if (!queue) return 0;
  drop_retained_dead_letters(*queue);  // they go with their queue
  count_members(*queue, -1);
  if (queue->group != 0) {
    bool held_here = queue_groups_.erase(queue->group) != 0;
    // (While the metadata group replays, the queue groups are not open yet: those no queue
    // keeps are removed when they are.)
    if (queue_store_ != nullptr && !replaying_definitions_ && held_here)
      queue_store_->remove_group(queue->group);
    // What was proposed goes with the queue: a publish to it is done (as if consumed at once).
    queue::CommandEffects nothing;
    finish_pending_commands(queue, &nothing);
  }
  release_flow_waiters(*queue);
  size_t ready = queue->machine.ready_count();
  for (HolderId consumer : queue->machine.consumer_ids()) {
    auto it = sinks_.find(consumer.value);
    if (it != sinks_.end()) it->second->consumer_cancelled_by_broker(consumer);
  }
  // Those of this node, if it went through another node's member.
  for (const auto& [holder, delivered] : std::exchange(queue->relay_holders, {})) {
    auto it = sinks_.find(holder.value);
    if (it != sinks_.end()) it->second->consumer_cancelled_by_broker(holder);
  }
  return ready;
}

namespace {

bool durable_queue(const Queue& queue) {
  return queue.durable && queue.exclusive_owner == 0;
}

ProtocolError no_vhost(const std::string& name) {
  return ProtocolError{amqp::ReplyCode::not_found, "no vhost '" + name + "'"};
}

}  // namespace

void Broker::change_definitions(MetadataCommand command, DefinitionDone done) {
  if (definition_store_ == nullptr) {
    DefinitionResult result =
        apply_definition(command, LogPosition{0, ++definitions_applied_without_store_});
    if (done) done(result);
    return;
  }
  definition_store_->propose(
      command, [this, done = std::move(done)](std::optional<LogPosition> position) mutable {
        auto failed = [&done](std::string why) {
          if (done)
            done(unexpected(ProtocolError{amqp::ReplyCode::internal_error, std::move(why)}));
        };
        if (!position) return failed("cannot record the change: the metadata group has no leader");
        // (Applied already: the answer came after the entry, which a forwarded proposal's never
        // does; its verdict is not known here.)
        if (position->index <= last_definition_index_)
          return failed("the change's outcome is lost");
        pending_definitions_[position->index] = PendingDefinition{position->term, std::move(done)};
      });
}

Broker::DefinitionResult Broker::apply_definition(const MetadataCommand& command,
                                                  LogPosition position) {
  DefinitionResult result = std::visit(
      [&](const auto& body) -> DefinitionResult {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, DeclareExchange>) {
          VirtualHost* vhost = find_virtual_host(body.exchange.vhost);
          if (vhost == nullptr) return unexpected(no_vhost(body.exchange.vhost));
          return apply_declare_exchange(*vhost, body.exchange, position.index);
        } else if constexpr (std::is_same_v<T, DeleteExchange>) {
          VirtualHost* vhost = find_virtual_host(body.vhost);
          if (vhost == nullptr) return unexpected(no_vhost(body.vhost));
          return apply_delete_exchange(*vhost, body);
        } else if constexpr (std::is_same_v<T, DeclareQueue>) {
          VirtualHost* vhost = find_virtual_host(body.queue.vhost);
          if (vhost == nullptr) return unexpected(no_vhost(body.queue.vhost));
          return apply_declare_queue(*vhost, body, position.index);
        } else if constexpr (std::is_same_v<T, DeleteQueue>) {
          VirtualHost* vhost = find_virtual_host(body.vhost);
          if (vhost == nullptr) return unexpected(no_vhost(body.vhost));
          return delete_queue(*vhost, body.name);
        } else if constexpr (std::is_same_v<T, Bind> || std::is_same_v<T, Unbind>) {
          const BindingDefinition& b = body.binding;
          VirtualHost* vhost = find_virtual_host(b.vhost);
          if (vhost == nullptr) return unexpected(no_vhost(b.vhost));
          auto changed = std::is_same_v<T, Bind>
                             ? vhost->bind(b.source, b.binding, body.requester)
                             : vhost->unbind(b.source, b.binding, body.requester);
          if (!changed.ok()) return unexpected(changed.error());
          return uint64_t{0};
        } else if constexpr (std::is_same_v<T, Barrier>) {
          return uint64_t{0};
        } else if constexpr (std::is_same_v<T, AddNode>) {
          return apply_add_node(body.node);
        } else if constexpr (std::is_same_v<T, ForgetNode>) {
          return apply_forget_node(body.name);
        } else if constexpr (std::is_same_v<T, SetQueueMembers>) {
          return apply_set_queue_members(body);
        } else if constexpr (std::is_same_v<T, SetNodeIncarnation>) {
          auto node = cluster_nodes_.find(body.node);
          if (node != cluster_nodes_.end()) {
            node->second.incarnation = std::max(node->second.incarnation, body.incarnation);
          }
          return uint64_t{0};
        }
      },
      command);
  answer_definitions(position, &result);
  return result;
}

void Broker::answer_definitions(LogPosition position, const DefinitionResult* result) {
  last_definition_index_ = std::max(last_definition_index_, position.index);
  // The proposals of this node up to this entry are answered: the one at this position by what
  // it did; one whose index another leader's entry took was never made, nor one placed in an
  // earlier term than this entry's (the entries after it are of its term or later).
  std::vector<std::pair<DefinitionDone, bool>> answered;
  for (auto it = pending_definitions_.begin(); it != pending_definitions_.end();) {
    if (it->first > position.index && it->second.term >= position.term) {
      ++it;
      continue;
    }
    bool ours =
        result != nullptr && it->first == position.index && it->second.term == position.term;
    answered.emplace_back(std::move(it->second.done), ours);
    it = pending_definitions_.erase(it);
  }
  for (auto& [done, ours] : answered) {
    if (!done) continue;
    if (ours) {
      done(*result);
    } else {
      done(unexpected(ProtocolError{amqp::ReplyCode::internal_error,
                                    "the change was lost in a change of metadata leader"}));
    }
  }
}

Broker::DefinitionResult Broker::apply_declare_exchange(VirtualHost& vhost,
                                                        const ExchangeDefinition& definition,
                                                        uint64_t index) {
  bool existed = vhost.find_exchange(definition.name) != nullptr;
  auto declared = vhost.declare_exchange(ExchangeDeclare{.name = definition.name,
                                                         .type = definition.type,
                                                         .passive = false,
                                                         .durable = definition.durable,
                                                         .auto_delete = definition.auto_delete,
                                                         .internal = definition.internal,
                                                         .arguments = definition.arguments});
  if (!declared.ok()) return unexpected(declared.error());
  Exchange* exchange = vhost.find_exchange(definition.name);
  if (existed || exchange == nullptr) return uint64_t{0};
  exchange->home = definition.home;
  if (!exchange->durable || !exchange->delay_queue || queue_store_ == nullptr) return uint64_t{0};
  if (definition.group == 0 && index == 0) {
    // A snapshot, written before version 4 by a node that did not hold its group, does not name
    // the group: its delayed messages stay in this node's memory, as they did then.
    return uint64_t{0};
  }
  // A durable delayed exchange keeps its delayed messages in a replicated group of their own,
  // placed as a durable queue's is; a node holding no member publishes into it through one that
  // does, and the group's leader routes each message when its time comes.
  open_group(exchange->delay_queue, index, definition.group, definition.members, definition.home,
             definition.arguments);
  return uint64_t{0};
}

Broker::DefinitionResult Broker::apply_delete_exchange(VirtualHost& vhost,
                                                       const DeleteExchange& command) {
  const Exchange* exchange = vhost.find_exchange(command.name);
  QueuePtr delay_queue = exchange != nullptr ? exchange->delay_queue : nullptr;
  auto deleted = vhost.delete_exchange(command.name, command.if_unused);
  if (!deleted.ok()) return unexpected(deleted.error());
  if (delay_queue && delay_queue->group != 0) {
    // Its delayed messages go with it.
    count_members(*delay_queue, -1);
    bool held_here = queue_groups_.erase(delay_queue->group) != 0;
    if (queue_store_ != nullptr && !replaying_definitions_ && held_here) {
      queue_store_->remove_group(delay_queue->group);
    }
    queue::CommandEffects nothing;
    finish_pending_commands(delay_queue, &nothing);  // (a publish to it is done)
    delay_queue->group = 0;
  }
  if (delay_queue) release_flow_waiters(*delay_queue);  // publishers it held back
  return uint64_t{0};
}

Broker::DefinitionResult Broker::apply_declare_queue(VirtualHost& vhost,
                                                     const DeclareQueue& command, uint64_t index) {
  const QueueDefinition& definition = command.queue;
  bool existed = vhost.find_queue(definition.name) != nullptr;
  auto declared = vhost.declare_queue(
      QueueDeclare{.name = definition.name,
                   .passive = false,
                   .durable = definition.durable,
                   .exclusive = definition.exclusive_owner != 0,
                   .auto_delete = definition.auto_delete,
                   .arguments = definition.arguments},
      definition.exclusive_owner != 0 ? definition.exclusive_owner : command.requester);
  if (!declared.ok()) return unexpected(declared.error());
  const QueuePtr& queue = declared.value();
  if (existed) return uint64_t{0};
  queue->home = definition.home;
  queue->last_used_ms = monotonic_ms_;
  if (queue->exclusive_owner >> queue::holder_node_shift == node_id_ &&
      !live_connections_.contains(queue->exclusive_owner) && !replaying_definitions_) {
    // Its owner closed before the declare was applied: it goes as if it had been there.
    propose_queue_delete(queue);
  }
  if (queue_store_ == nullptr || !durable_queue(*queue)) return uint64_t{0};
  open_group(queue, index, definition.group, definition.members, definition.home,
             definition.arguments);
  return uint64_t{0};
}

void Broker::open_group(const QueuePtr& queue, uint64_t index, uint64_t group,
                        const std::vector<uint64_t>& members, uint64_t home,
                        const amqp::FieldTable& arguments) {
  if (!members.empty()) {
    queue->members = members;
  } else if (group == 0) {
    queue->members = place_members(home, arguments);
  } else if (home != 0) {
    queue->members = {home};  // written before members: on its home node
  }
  // (Else a snapshot from before members of one without a home, a parking queue of then: a group
  // of its own on every node, its members unrecorded.)
  count_members(*queue, 1);
  queue->group = group != 0 ? group : queue_group_of(index);
  group = queue->group;
  std::vector<uint64_t> founders = queue->members;
  if (founders.empty()) founders = {node_id_};
  if (std::find(founders.begin(), founders.end(), node_id_) == founders.end()) {
    return;  // its group lives on other nodes: commands to it from here go through them
  }
  if (!replaying_definitions_) {
    // (A node that lost its disk and learns of the queue only now, its start over: it existed
    // before, perhaps with this node.)
    if (joins_after_disk_loss(*queue)) {
      queue_store_->join_group(group);
    } else {
      queue_store_->create_group(group, founders);
    }
  }
  attach_group(queue, group);
}

std::vector<uint64_t> Broker::place_members(uint64_t home,
                                            const amqp::FieldTable& arguments) const {
  uint64_t size = queue_group_size_default;
  if (const amqp::FieldValue* asked = arguments.find("x-quorum-initial-group-size")) {
    if (auto value = asked->as_integer(); value && *value >= 1)
      size = static_cast<uint64_t>(*value);
  }
  std::vector<uint64_t> candidates;
  for (const auto& [id, node] : cluster_nodes_) {
    if (!node.forgotten) candidates.push_back(id);
  }
  // A node alone, or a model from before nodes were recorded: the declaring node.
  if (candidates.empty()) return {home != 0 ? home : node_id_};
  auto hosted = [this](uint64_t id) {
    auto it = members_hosted_.find(id);
    return it == members_hosted_.end() ? uint64_t{0} : it->second;
  };
  std::stable_sort(candidates.begin(), candidates.end(), [&](uint64_t a, uint64_t b) {
    return std::make_tuple(a != home, hosted(a), a) < std::make_tuple(b != home, hosted(b), b);
  });
  candidates.resize(std::min<uint64_t>(size, candidates.size()));
  return candidates;
}

void Broker::count_members(const Queue& queue, int delta) {
  for (uint64_t member : queue.members) {
    uint64_t& count = members_hosted_[member];
    count = delta > 0 ? count + 1 : count - std::min<uint64_t>(count, 1);
  }
}

Broker::DefinitionResult Broker::apply_add_node(const ClusterNode& node) {
  ClusterNode added = node;
  if (added.id == 0) {
    // A join: refused for a name that is a member already.
    for (const auto& [id, member] : cluster_nodes_) {
      if (member.name != node.name || member.forgotten) continue;
      // The same node asking again (its answer was lost) gets the same id.
      if (member.host == node.host && member.port == node.port) return id;
      return unexpected(ProtocolError{amqp::ReplyCode::precondition_failed,
                                      "node '" + node.name + "' is a member already"});
    }
    added.id = next_node_id(cluster_nodes_);
  }
  uint64_t id = added.id;
  if (auto known = cluster_nodes_.find(id); known != cluster_nodes_.end()) {
    added.incarnation = std::max(added.incarnation, known->second.incarnation);
  }
  cluster_nodes_[id] = std::move(added);
  if (nodes_listener_) nodes_listener_();
  return id;
}

Broker::DefinitionResult Broker::apply_forget_node(const std::string& name) {
  auto member = std::find_if(cluster_nodes_.begin(), cluster_nodes_.end(), [&](const auto& entry) {
    return entry.second.name == name && !entry.second.forgotten;
  });
  if (member == cluster_nodes_.end()) {
    return unexpected(
        ProtocolError{amqp::ReplyCode::not_found, "no node '" + name + "' in the cluster"});
  }
  member->second.forgotten = true;
  uint64_t id = member->first;
  // What lived on that node alone goes with it: its transient and exclusive queues and
  // exchanges, and the durable queues whose every member is forgotten.
  auto forgotten = [this](uint64_t node) {
    auto it = cluster_nodes_.find(node);
    return it != cluster_nodes_.end() && it->second.forgotten;
  };
  for (const auto& [vhost_name, vhost] : virtual_hosts_) {
    std::vector<std::string> queues;
    for (const auto& [queue_name, queue] : vhost->queues()) {
      bool gone = queue->members.empty()
                      ? queue->home == id
                      : std::all_of(queue->members.begin(), queue->members.end(), forgotten);
      if (gone) queues.push_back(queue_name);
    }
    for (const std::string& queue_name : queues) delete_queue(*vhost, queue_name);
    std::vector<std::string> exchanges;
    for (const auto& [exchange_name, exchange] : vhost->exchanges()) {
      if (exchange.home == id && !exchange.durable) exchanges.push_back(exchange_name);
    }
    for (const std::string& exchange_name : exchanges) {
      (void)apply_delete_exchange(*vhost, DeleteExchange{vhost_name, exchange_name});
    }
  }
  if (nodes_listener_) nodes_listener_();
  return id;
}

Broker::DefinitionResult Broker::apply_set_queue_members(const SetQueueMembers& change) {
  VirtualHost* vhost = find_virtual_host(change.vhost);
  if (vhost == nullptr) return unexpected(no_vhost(change.vhost));
  QueuePtr queue = vhost->find_queue(change.name);
  std::string named = "queue '" + change.name + "' in vhost '" + change.vhost + "'";
  if (!queue) return unexpected(ProtocolError{amqp::ReplyCode::not_found, "no " + named});
  if (!durable_queue(*queue) || queue->group == 0 || queue->members.empty()) {
    return unexpected(
        ProtocolError{amqp::ReplyCode::precondition_failed, named + " is not replicated"});
  }
  for (uint64_t member : change.members) {
    auto node = cluster_nodes_.find(member);
    if (node == cluster_nodes_.end() || node->second.forgotten) {
      return unexpected(ProtocolError{amqp::ReplyCode::precondition_failed,
                                      "node " + std::to_string(member) + " is not in the cluster"});
    }
  }
  if (change.expected != queue->members) {
    return unexpected(ProtocolError{
        amqp::ReplyCode::precondition_failed,
        "the members of " + named + " changed meanwhile (another change): ask again"});
  }
  if (change.members.empty() || change.members == queue->members) return uint64_t{0};
  count_members(*queue, -1);
  queue->members = change.members;
  queue->members_changed = true;
  count_members(*queue, 1);
  bool member_here =
      std::find(change.members.begin(), change.members.end(), node_id_) != change.members.end();
  if (member_here && !queue_groups_.contains(queue->group) && queue_store_ != nullptr) {
    // New here: an empty replica that catches up from the leader (its snapshot or its log).
    // (While the metadata replays at a start, the log opens the groups it holds.)
    if (!replaying_definitions_) queue_store_->join_group(queue->group);
    attach_group(queue, queue->group);
  }
  // What the nodes that leave held is ready again once the queue's leader sees it
  // (detach_non_members, each second: a leader that takes over later does it too).
  return uint64_t{0};
}

std::vector<SetQueueMembers> Broker::queue_repairs(const std::set<uint64_t>& away) const {
  std::vector<SetQueueMembers> repairs;
  auto forgotten = [this](uint64_t node) {
    auto it = cluster_nodes_.find(node);
    return it == cluster_nodes_.end() || it->second.forgotten;
  };
  auto lost = [&](uint64_t node) { return forgotten(node) || away.contains(node); };
  auto hosted = [this](uint64_t id) {
    auto it = members_hosted_.find(id);
    return it == members_hosted_.end() ? uint64_t{0} : it->second;
  };
  for (const auto& [vhost_name, vhost] : virtual_hosts_) {
    for (const auto& [name, queue] : vhost->queues()) {
      if (queue->group == 0 || !std::any_of(queue->members.begin(), queue->members.end(), lost)) {
        continue;
      }
      std::vector<uint64_t> candidates;
      for (const auto& [id, node] : cluster_nodes_) {
        if (!lost(id) &&
            std::find(queue->members.begin(), queue->members.end(), id) == queue->members.end()) {
          candidates.push_back(id);
        }
      }
      std::stable_sort(candidates.begin(), candidates.end(), [&](uint64_t a, uint64_t b) {
        return std::make_pair(hosted(a), a) < std::make_pair(hosted(b), b);
      });
      // Each lost member replaced while a candidate is left; a forgotten one without a
      // replacement is left out, one away kept (it may come back).
      std::vector<uint64_t> members;
      size_t next = 0;
      for (uint64_t member : queue->members) {
        if (!lost(member)) {
          members.push_back(member);
        } else if (next < candidates.size()) {
          members.push_back(candidates[next++]);
        } else if (!forgotten(member)) {
          members.push_back(member);
        }
      }
      if (members.empty() || members == queue->members) continue;
      repairs.push_back(SetQueueMembers{vhost_name, name, std::move(members), queue->members});
    }
  }
  return repairs;
}

void Broker::detach_non_members(uint64_t group) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue || queue->members.empty() || !runs_effects(*queue)) return;
  const std::vector<uint64_t>& members = queue->members;
  // (Nodes without a member that use the queue through one are not elsewhere.)
  auto elsewhere = [this, &queue, &members](HolderId holder) {
    return holder.node() != 0 &&
           std::find(members.begin(), members.end(), holder.node()) == members.end() &&
           !relay_user(*queue, holder.node(), false);
  };
  for (queue::QueueCommand& one : detach_commands(*queue, elsewhere)) {
    execute(queue, std::move(one));
  }
}

std::optional<std::vector<uint64_t>> Broker::queue_members(uint64_t group) const {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue || queue->members.empty()) return std::nullopt;
  return queue->members;
}

void Broker::drop_replica(uint64_t group) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue) return;
  queue_groups_.erase(it);
  if (queue_store_ != nullptr) queue_store_->remove_group(group);
  forget_replica(queue);
}

void Broker::replica_damaged(uint64_t group) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  // Rebuilt from the other members' snapshot and log, as a replica made here anew: what it had
  // goes (the entries it applied would be applied again on top).
  if (queue) forget_replica(queue);
}

void Broker::forget_replica(const QueuePtr& queue) {
  finish_pending_commands(queue, nullptr);
  for (HolderId consumer : queue->machine.consumer_ids()) {
    auto sink = sinks_.find(consumer.value);
    if (consumer.node() == node_id_ && sink != sinks_.end()) {
      sink->second->consumer_cancelled_by_broker(consumer);
    }
  }
  // Its state lived in the replica: a node without a member holds none (and a replica made
  // here again starts from nothing).
  queue->machine.clear();
  queue->applied_index = 0;
  queue->applied_term = 0;
  queue->snapshot_index = 0;
  queue->log_bytes_since_snapshot = 0;
  queue->last_snapshot_bytes = 0;
}

Definitions Broker::current_definitions() const {
  Definitions definitions;
  for (const auto& [id, node] : cluster_nodes_) definitions.apply(AddNode{node});
  for (const auto& [vhost_name, vhost_ptr] : virtual_hosts_) {
    const VirtualHost& vhost = *vhost_ptr;
    for (const auto& [name, exchange] : vhost.exchanges()) {
      if (name.empty() || name.starts_with("amq.")) continue;  // predeclared
      std::string type(exchange.delayed ? delayed_exchange_type
                                        : exchange_type_name(exchange.type));
      uint64_t group = exchange.delay_queue ? exchange.delay_queue->group : 0;
      std::vector<uint64_t> members;
      if (exchange.delay_queue) members = exchange.delay_queue->members;
      definitions.apply(
          DeclareExchange{{vhost_name, name, type, exchange.auto_delete, exchange.internal,
                           exchange.arguments, group, exchange.durable, exchange.home, members}});
    }
    for (const auto& [name, queue] : vhost.queues()) {
      definitions.apply(
          DeclareQueue{{vhost_name, name, queue->group, queue->auto_delete, queue->arguments,
                        queue->durable, queue->exclusive_owner, queue->home, queue->members}});
    }
    for (const auto& [name, exchange] : vhost.exchanges()) {
      for (const Binding& binding : exchange.bindings) {
        definitions.apply(Bind{{vhost_name, name, binding}});
      }
    }
  }
  return definitions;
}

Result<void, std::string> Broker::restore_definitions(std::string_view snapshot) {
  auto commands = Definitions::snapshot_commands(snapshot);
  if (!commands.ok()) return unexpected(commands.error());
  // A member that fell too far behind gets the leader's snapshot while it runs: what it has that
  // the snapshot has not (or has otherwise) goes first, then the snapshot's are declared (those it
  // has alike stay as they are, with their messages).
  Definitions target;
  for (const MetadataCommand& command : *commands) target.apply(command);
  Definitions current = current_definitions();
  for (const BindingDefinition& binding : current.bindings()) {
    const auto& kept = target.bindings();
    if (std::find(kept.begin(), kept.end(), binding) != kept.end()) continue;
    if (VirtualHost* vhost = find_virtual_host(binding.vhost)) {
      QueuePtr destination = binding.binding.destination_is_queue
                                 ? vhost->find_queue(binding.binding.destination)
                                 : nullptr;
      (void)vhost->unbind(binding.source, binding.binding,
                          destination ? destination->exclusive_owner : 0);
    }
  }
  for (const auto& [key, queue] : current.queues()) {
    auto kept = target.queues().find(key);
    if (kept != target.queues().end() && kept->second == queue) continue;
    if (VirtualHost* vhost = find_virtual_host(key.first)) delete_queue(*vhost, key.second);
  }
  for (const auto& [key, exchange] : current.exchanges()) {
    auto kept = target.exchanges().find(key);
    if (kept != target.exchanges().end() && kept->second == exchange) continue;
    if (VirtualHost* vhost = find_virtual_host(key.first)) {
      (void)apply_delete_exchange(*vhost, DeleteExchange{key.first, key.second});
    }
  }
  cluster_nodes_.clear();  // the snapshot's nodes replace them
  for (const MetadataCommand& command : *commands) {
    auto applied = apply_definition(command, LogPosition{});
    if (!applied.ok()) return unexpected("the snapshot does not apply: " + applied.error().text);
  }
  return Ok{};
}

bool Broker::joins_after_disk_loss(const Queue& queue) const {
  // Only where the other members are a majority without this one: with fewer (a group of two),
  // every committed entry is on the others, and joining would leave the group without a vote
  // to elect anyone.
  size_t others = static_cast<size_t>(std::count_if(queue.members.begin(), queue.members.end(),
                                                    [this](uint64_t m) { return m != node_id_; }));
  return disk_lost() && others >= queue.members.size() / 2 + 1;
}

bool Broker::disk_lost() const {
  auto self = cluster_nodes_.find(node_id_);
  return fresh_log_ && self != cluster_nodes_.end() && self->second.incarnation != 0 &&
         self->second.incarnation != incarnation_;
}

void Broker::record_incarnation() {
  auto self = cluster_nodes_.find(node_id_);
  if (incarnation_ == 0 || self == cluster_nodes_.end() ||
      self->second.incarnation == incarnation_) {
    return;
  }
  change_definitions(SetNodeIncarnation{node_id_, incarnation_});
}

void Broker::found_missing_groups() {
  if (queue_store_ == nullptr) return;
  for (const auto& [group, weak] : queue_groups_) {
    QueuePtr queue = weak.lock();
    if (queue && queue_store_->damaged(group)) {
      // Its log here was found damaged: rebuilt from the other members if it has some (a group
      // of this node alone has nobody to take it from: it stays stopped, its queue unavailable).
      bool others = std::any_of(queue->members.begin(), queue->members.end(),
                                [this](uint64_t member) { return member != node_id_; });
      if (others) queue_store_->rebuild_group(group);
      continue;
    }
    if (!queue || queue_store_->has_group(group)) continue;
    if (queue->members_changed || joins_after_disk_loss(*queue)) {
      // Its members changed since it was founded: this node takes its state from their leader,
      // never founds it anew with the members of now, which are not its founders. (Members
      // restored from a metadata snapshot are taken for the founders.) Or this node's log is
      // new: the group existed before it, on this node too perhaps (a wiped disk), and its
      // other members have what it lost. (A group of this node alone is founded again: what it
      // held is lost with the disk, the queue starts empty.)
      queue_store_->join_group(group);
      continue;
    }
    queue_store_->create_group(
        group, queue->members.empty() ? std::vector<uint64_t>{node_id_} : queue->members);
  }
}

size_t Broker::drop_transient_definitions() {
  std::vector<MetadataCommand> deletes;
  for (const auto& [vhost_name, vhost] : virtual_hosts_) {
    for (const auto& [name, queue] : vhost->queues()) {
      if (!durable_queue(*queue) && queue->home == node_id_) {
        deletes.push_back(DeleteQueue{vhost_name, name});
      }
    }
    for (const auto& [name, exchange] : vhost->exchanges()) {
      if (!exchange.durable && exchange.home == node_id_ && !name.empty()) {
        deletes.push_back(DeleteExchange{vhost_name, name});
      }
    }
  }
  for (MetadataCommand& command : deletes) change_definitions(std::move(command));
  return deletes.size();
}

std::set<uint64_t> Broker::queue_groups() const {
  std::set<uint64_t> groups;
  for (const auto& [group, queue] : queue_groups_) groups.insert(group);
  return groups;
}

void Broker::attach_group(const QueuePtr& queue, uint64_t group) {
  queue->group = group;
  queue->machine.keep_bodies_of(durable_queue_cached_bodies, durable_queue_cached_body_bytes);
  queue->machine.keep_leaving_messages();
  queue_groups_[group] = queue;
  // Founded here and led at once (a new queue): nothing to take over, its effects are here.
  if (auto term = queue_store_->leader_term(group)) queue->effects_term = *term;
}

void Broker::run(const QueuePtr& queue, const queue::QueueCommand& command, const CommandDone& done,
                 uint64_t log_index) {
  queue::CommandEffects effects = queue::apply_command(queue->machine, command, log_index);
  dispatch(queue, effects.deliveries);
  if (done) done(queue, &effects);
}

void Broker::apply_queue_entry(uint64_t group, LogPosition position, std::string_view data) {
  auto it = queue_groups_.find(group);
  if (it == queue_groups_.end()) return;
  QueuePtr queue = it->second.lock();
  if (!queue) return;
  uint64_t index = position.index;
  queue->log_bytes_since_snapshot += data.size();
  queue->applied_index = index;
  queue->applied_term = position.term;
  // Proposed here (this life's number): run as it was made (the same bytes are in the log), at
  // the time its leader stamped (another node's when it was forwarded): every replica runs it
  // then.
  std::optional<Queue::PendingCommand> mine;
  auto origin = queue::command_origin(data);
  // A copy that came before one numbered before it runs nothing (on every replica): its
  // proposer sends it again, after that one.
  bool early = origin && origin->proposer != 0 &&
               queue->machine.admission(origin->proposer, origin->seq, origin->floor) ==
                   queue::QueueMachine::Admission::early;
  if (origin && origin->proposer == proposer_id() &&
      queue->pending_commands.contains(origin->seq)) {
    if (early) {
      send_again_from(*queue, origin->seq);
    } else {
      mine = take_pending(*queue, origin->seq);
      if (auto stamped = queue::command_time(data)) mine->command.time_ms = *stamped;
      mine->command.origin = *origin;  // this copy's (an earlier one's floor may be lower)
    }
  } else if (origin && origin->proposer != proposer_id()) {
    // Another node's command relayed through this one: no longer to be sent (it is answered
    // below, as any other node's command is).
    auto relayed = queue->relayed_pending.find({origin->proposer, origin->seq});
    if (relayed != queue->relayed_pending.end()) {
      if (early) {
        send_again_from(*queue, relayed->second);
      } else {
        take_pending(*queue, relayed->second);
      }
    }
  }
  find_lost_copies(*queue, position);
  if (data.empty()) {
    // A new leader's first entry: nothing to run, but if this node is that leader, the queue's
    // effects are its own from here (everything before is applied). A replay leaves that to
    // end_replay.
    auto term = queue_store_->leader_term(group);
    if (!replaying_ && term && *term == position.term) take_over(queue, *term);
  } else if (mine) {
    run(queue, mine->command, mine->done, index);
  } else if (auto command = queue::decode_command(data); command.ok()) {
    // A node without a member that goes through this one is told what its command did.
    run(queue, *command, answer_relayed(*queue, command->origin), index);
    // Another node cancelled a consumer of this one (its node seemed gone): its client is told
    // (through this node, if that consumer's node has no member).
    if (const auto* cancel = std::get_if<queue::CancelCommand>(&command->body)) {
      auto sink = sinks_.find(cancel->consumer.value);
      uint64_t node = cancel->consumer.node();
      if (node == node_id_ && sink != sinks_.end()) {
        sink->second->consumer_cancelled_by_broker(cancel->consumer);
      } else if (node != node_id_ && queue_relay_ != nullptr && relay_user(*queue, node, true)) {
        queue::RelayedEffects relayed;
        relayed.cancelled.push_back(cancel->consumer);
        send_relayed_effects(*queue, node, std::move(relayed));
      }
    }
  } else {
    ++undecodable_entries_;
  }
  // Copies lost to this entry go again now, ahead of what waited behind them.
  send_pending(queue);
  // Resyncs that waited for this replica to apply this far.
  for (auto& [node, user] : queue->relay_users) {
    if (user.resync && queue->applied_index >= user.after) answer_resync(queue, node);
  }
  maybe_snapshot(queue, false);
}

void Broker::snapshot_queue(uint64_t group) {
  auto it = queue_groups_.find(group);
  if (QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock()) {
    maybe_snapshot(queue, true);
  }
}

void Broker::maybe_snapshot(const QueuePtr& queue, bool asked) {
  // Asked (its log keeps the node's oldest segment) it snapshots sooner; either way its snapshots
  // come to at most a quarter of what its log takes.
  uint64_t due = std::max(asked ? 1 : queue_snapshot_log_bytes_,
                          queue_snapshot_log_ratio * queue->last_snapshot_bytes);
  // An idle queue whose log holds only entries that changed nothing (a leader's first) snapshots
  // when asked, or those would keep the oldest segment forever.
  bool idle_behind =
      asked && queue->log_bytes_since_snapshot == 0 && queue->applied_index > queue->snapshot_index;
  if ((queue->log_bytes_since_snapshot < due && !idle_behind) || queue->group == 0 ||
      queue_store_ == nullptr) {
    return;
  }
  // Its oldest messages go in with their bodies, the others as references to the entries that
  // stored them, which the log keeps: a large queue is not written whole again at each snapshot.
  // (A member that lags is sent it made self-contained: self_contained_snapshot.)
  uint64_t cut = queue->machine.reference_cut(queue_snapshot_carried_bytes_);
  auto snapshot = queue->machine.snapshot(
      [this, &queue](uint64_t stored_at) { return load_message(*queue, stored_at); }, cut);
  if (!snapshot.ok()) return;  // a body could not be read: try again later
  queue->log_bytes_since_snapshot = 0;
  queue->last_snapshot_bytes = snapshot->size();
  if (snapshot->size() > queue_snapshot_bytes_max) return;  // too many messages: try later
  queue->snapshot_index = queue->applied_index;
  queue_store_->compact(queue->group, queue->applied_index, std::move(*snapshot),
                        cut == UINT64_MAX ? 0 : cut);
}

Result<void, std::string> Broker::restore_queue(uint64_t group, LogPosition position,
                                                std::string_view snapshot) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue) return unexpected("no queue has group " + std::to_string(group));
  auto restored = queue->machine.restore(snapshot);
  if (!restored.ok()) return restored;
  queue->applied_index = std::max(queue->applied_index, position.index);
  queue->applied_term = std::max(queue->applied_term, position.term);
  // Commands of this node the snapshot shows applied are done (what they did is not known
  // here: a publish is confirmed, a basic.get answers empty); copies placed before its end that
  // it does not show were lost.
  std::vector<uint64_t> applied;
  for (const auto& [seq, pending] : queue->pending_commands) {
    const queue::CommandOrigin& origin = pending.command.origin;
    if (pending.relayed ? queue->machine.admitted(origin.proposer, origin.seq)
                        : queue->machine.admitted(proposer_id(), seq)) {
      applied.push_back(seq);
    }
  }
  find_lost_copies(*queue, position);
  for (uint64_t seq : applied) {
    if (!queue->pending_commands.contains(seq)) continue;  // a callback before took it
    Queue::PendingCommand done = take_pending(*queue, seq);
    if (done.relayed) continue;  // its node learns what became of it by a resync
    if (const auto* attach = std::get_if<queue::AttachCommand>(&done.command.body)) {
      // A consume whose outcome is not known: refused to its client, and detached from the
      // queue (it may be attached there), what it was given returned.
      execute(queue, command(queue::DetachCommand{attach->consumer}));
      if (done.done) done.done(queue, nullptr);
      continue;
    }
    queue::CommandEffects unknown;
    if (done.done) done.done(queue, &unknown);
  }
  return Ok{};
}

std::optional<std::string> Broker::self_contained_snapshot(uint64_t group,
                                                           std::string_view snapshot) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue) return std::nullopt;
  if (snapshot.empty()) return std::string();  // a group's founding state: a new, empty queue
  queue::QueueMachine copy(queue->machine.options());
  if (!copy.restore(snapshot).ok()) return std::nullopt;
  auto whole =
      copy.snapshot([this, &queue](uint64_t stored_at) { return load_message(*queue, stored_at); });
  if (!whole.ok()) return std::nullopt;
  return std::move(*whole);
}

queue::MessagePtr Broker::load_message(const Queue& queue, uint64_t stored_at) {
  if (queue_store_ != nullptr && queue.group != 0) {
    if (auto bytes = queue_store_->read(queue.group, stored_at)) {
      auto command = queue::decode_command(*bytes);
      if (command.ok()) {
        if (auto* enqueue = std::get_if<queue::EnqueueCommand>(&command->body)) {
          return std::move(enqueue->message);
        }
      }
    }
  }
  ++unreadable_messages_;
  return nullptr;
}

void Broker::fail_pending_commands() {
  for (auto& [group, weak] : queue_groups_) {
    if (QueuePtr queue = weak.lock()) finish_pending_commands(queue, nullptr);
  }
  auto definitions = std::move(pending_definitions_);
  pending_definitions_.clear();
  for (auto& [index, pending] : definitions) {
    if (pending.done) {
      pending.done(unexpected(ProtocolError{amqp::ReplyCode::internal_error,
                                            "cannot record the change: the metadata log failed"}));
    }
  }
}

void Broker::end_replay() {
  replaying_ = false;
  // The groups this node leads now are its own; the others wait for their leader's first entry.
  for (auto& [group, weak] : queue_groups_) {
    QueuePtr queue = weak.lock();
    if (!queue || queue->vhost == nullptr) continue;
    if (auto term = queue_store_->leader_term(group)) take_over(queue, *term);
  }
  flush_hand_overs();
}

bool Broker::runs_effects(const Queue& queue) const {
  if (queue.group == 0 || queue_store_ == nullptr) return true;
  auto term = queue_store_->leader_term(queue.group);
  return term && *term == queue.effects_term;
}

void Broker::take_over(const QueuePtr& queue, uint64_t term) {
  queue->effects_term = term;
  // Letters this node retained as an earlier leader are among those leaving: offered once.
  drop_retained_dead_letters(*queue);
  if (queue->vhost == nullptr) return;
  auto leaving = queue->machine.leaving_messages();
  if (!leaving.empty()) hand_over(queue, std::move(leaving));
  queue->wake_at_ms = UINT64_MAX;  // its wake-ups from before are stale
  schedule(queue);
  for (uint64_t node : gone_nodes_) detach_node(queue, node);
}

void Broker::set_node_id(uint64_t node) {
  HAMQ_VERIFY(node > 0 && node < (uint64_t{1} << (64 - queue::holder_node_shift)),
              "node id out of range");
  node_id_ = node;
}

void Broker::detach_previous_holders() {
  for (auto& [group, weak] : queue_groups_) {
    if (QueuePtr queue = weak.lock()) detach_previous_lives(queue);
  }
}

bool Broker::detach_previous_lives(const QueuePtr& queue) {
  // This node's holders of its earlier lives (and those logged before holders carried a node):
  // another node's consumers are that node's to detach.
  auto previous_life = [this](HolderId holder) {
    return (holder.node() == node_id_ && holder.life() != life_) || holder.node() == 0;
  };
  if (queue->previous_lives_detaching != 0) return false;  // proposed, not applied yet
  auto commands = detach_commands(*queue, previous_life);
  queue->previous_lives_detaching = commands.size();
  for (queue::QueueCommand& one : commands) {
    execute(queue, std::move(one),
            [](const QueuePtr& q, const queue::CommandEffects*) { --q->previous_lives_detaching; });
  }
  // (Proposals answered at once, refused, are made again at the next sweep.)
  return commands.empty();
}

std::vector<queue::QueueCommand> Broker::detach_commands(
    const Queue& queue, const std::function<bool(HolderId)>& which) const {
  // Consumers first: a message given back must not go to a consumer that is going too.
  std::vector<queue::QueueCommand> commands;
  for (HolderId consumer : queue.machine.consumer_ids()) {
    if (which(consumer)) commands.push_back(command(queue::CancelCommand{consumer}));
  }
  for (HolderId holder : queue.machine.holder_ids()) {
    if (which(holder)) commands.push_back(command(queue::DetachCommand{holder}));
  }
  return commands;
}

void Broker::node_gone(uint64_t node) {
  if (node == node_id_ || !gone_nodes_.insert(node).second) return;
  for (auto& [group, weak] : queue_groups_) {
    QueuePtr queue = weak.lock();
    if (queue && runs_effects(*queue)) detach_node(queue, node);
  }
}

void Broker::detach_node(const QueuePtr& queue, uint64_t node) {
  auto of_node = [node](HolderId holder) { return holder.node() == node; };
  for (queue::QueueCommand& one : detach_commands(*queue, of_node)) execute(queue, std::move(one));
}

bool Broker::sweep_previous_lives(uint64_t group) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  return queue == nullptr || detach_previous_lives(queue);
}

size_t Broker::pending_command_count() const {
  size_t count = 0;
  for (const auto& [group, weak] : queue_groups_) {
    if (QueuePtr queue = weak.lock()) count += queue->pending_commands.size();
  }
  return count;
}

}  // namespace hamq::broker
