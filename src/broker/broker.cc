#include "broker/broker.h"

#include "broker/dead_letter.h"

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
  for (const auto& delivery : deliveries) {
    auto it = sinks_.find(delivery.holder.value);
    if (it == sinks_.end()) continue;
    if (delivery.message) {
      it->second->deliver(queue, delivery);
      continue;
    }
    queue::Delivery loaded = delivery;  // its body waited on disk
    loaded.message = load_message(*queue, delivery.stored_at);
    if (loaded.message) it->second->deliver(queue, loaded);
  }
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
  queue->last_used_ms = wall_clock_ms_;
  schedule(queue);
}

void Broker::schedule(const QueuePtr& queue) {
  std::optional<uint64_t> at_ms = queue->machine.next_expiry_ms();
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
  while (!wakeups_.empty() && wakeups_.begin()->first <= wall_clock_ms_) {
    auto [at_ms, weak] = *wakeups_.begin();
    wakeups_.erase(wakeups_.begin());
    QueuePtr queue = weak.lock();
    if (!queue || queue->wake_at_ms != at_ms) continue;  // deleted, or rescheduled
    queue->wake_at_ms = UINT64_MAX;
    auto expiry = queue_expiry_ms(*queue);
    if (expiry && *expiry <= wall_clock_ms_ && queue->vhost != nullptr &&
        queue->vhost->find_queue(queue->name) == queue) {
      // Unused for its x-expires: deleted, its messages with it (not dead-lettered).
      delete_queue(*queue->vhost, queue->name);
      continue;
    }
    if (queue->dead_letter_retry_at_ms <= wall_clock_ms_) retry_dead_letters(queue);
    // Delivers, dead-letters and schedules the next wake-up (once applied, for a durable queue).
    execute(queue, command(queue::ExpireCommand{}));
  }
  flush_hand_overs();     // retried dead letters that in-memory queues took
  persist_definitions();  // an expired queue is gone for good
}

namespace {

// A delayed message whose time has come, as it is routed: its x-delay negated (so that publishing
// it again does not delay it again), its BCC keys taken out of the headers into `extra_keys`.
queue::MessagePtr released_message(const queue::Message& message,
                                   std::vector<std::string>& extra_keys) {
  auto released = std::make_shared<queue::Message>(message);
  if (auto& headers = released->properties.headers) {
    for (auto& entry : headers->entries) {
      if (entry.name == "x-delay") {
        // As the plugin does: a signed 32-bit integer (what clients decode as signed).
        if (auto delay = entry.value.as_integer(); delay && *delay <= INT32_MAX) {
          entry.value = amqp::FieldValue(static_cast<int32_t>(-*delay));
        } else if (delay) {
          entry.value = amqp::FieldValue(-*delay);
        }
      } else if (entry.name == "CC" || entry.name == "BCC") {
        if (const auto* keys = std::get_if<amqp::FieldArray>(&entry.value.value)) {
          for (const auto& key : keys->values) {
            if (const auto* text = std::get_if<std::string>(&key.value))
              extra_keys.push_back(*text);
          }
        }
      }
    }
    std::erase_if(headers->entries, [](const amqp::FieldTableEntry& e) { return e.name == "BCC"; });
  }
  return released;
}

uint64_t retained_bytes(const HandOver& hand_over) {
  return hand_over.message->body.size() + queue::message_overhead_bytes;
}

}  // namespace

void Broker::enqueue(const QueuePtr& target, queue::MessagePtr message,
                     std::function<void(bool taken)> answered) {
  execute(target, command(queue::EnqueueCommand{std::move(message)}),
          [answered = std::move(answered)](const QueuePtr&, const queue::CommandEffects* effects) {
            // No effects: not done. Effects with no result: the queue was deleted meanwhile,
            // which counts as taken (as if consumed at once).
            answered(effects != nullptr && effects->enqueued != queue::EnqueueResult::rejected);
          });
}

void Broker::dead_letter(const QueuePtr& queue) {
  auto letters = queue->machine.take_dead_letters();
  // A replay's letters were handed over before, or are still leaving: end_replay() sees to them.
  if (replaying_ || queue->vhost == nullptr) return;
  hand_over(queue, std::move(letters));
}

void Broker::hand_over(const QueuePtr& queue, std::vector<queue::DeadLetter> letters) {
  VirtualHost& vhost = *queue->vhost;
  const auto* exchange = queue->arguments.find("x-dead-letter-exchange");
  const auto* exchange_name = exchange ? std::get_if<std::string>(&exchange->value) : nullptr;
  std::optional<std::string> routing_key;
  if (const auto* key = queue->arguments.find("x-dead-letter-routing-key")) {
    if (const auto* text = std::get_if<std::string>(&key->value)) routing_key = *text;
  }
  // RabbitMQ drops a dead letter that its target refuses or that routes nowhere (at-most-once,
  // reference §13.2); hamq keeps it and tries again, unless the queue asks for at-most-once.
  const auto* strategy = queue->arguments.find("x-dead-letter-strategy");
  bool at_least_once = strategy == nullptr || *strategy != amqp::FieldValue("at-most-once");
  for (auto& dead : letters) {
    auto leaving = std::make_shared<HandOver>();
    leaving->source = queue;
    leaving->vhost = &vhost;
    leaving->id = dead.id;
    if (!dead.message) dead.message = load_message(*queue, dead.stored_at);
    if (!dead.message) {
      finish_hand_over(*leaving);  // unreadable (counted): nothing to hand over
      continue;
    }
    if (!queue->delayed_exchange.empty()) {
      // A delayed exchange's messages "expire" into the exchange when their delay is up; one
      // that routes nowhere, or that its target refuses, is dropped (as by the plugin).
      leaving->message = released_message(*dead.message, leaving->extra_keys);
      leaving->exchange = queue->delayed_exchange;
      leaving->routing_key = leaving->message->routing_key;
      if (!offer(leaving)) finish_hand_over(*leaving);
      continue;
    }
    if (exchange_name == nullptr) {
      // Only a message past its delivery limit becomes a dead letter without an exchange.
      park(queue, leaving, *dead.message);
      continue;
    }
    DeadLetterRoute route = make_dead_letter(*dead.message, queue->name, dead.reason,
                                             *exchange_name, routing_key, wall_clock_ms_ / 1000);
    leaving->message = std::move(route.message);
    leaving->exchange = *exchange_name;
    leaving->routing_key = std::move(route.routing_key);
    leaving->extra_keys = std::move(route.extra_keys);
    leaving->dead_letter = true;
    leaving->at_least_once = at_least_once;
    if (offer(leaving)) continue;
    if (dead.reason == queue::DeadLetterReason::delivery_limit) {
      park(queue, leaving, *dead.message);
    } else if (at_least_once) {
      retain(leaving);
    } else {
      finish_hand_over(*leaving);
    }
  }
}

bool Broker::offer(const std::shared_ptr<HandOver>& leaving) {
  VirtualHost& vhost = *leaving->vhost;
  if (vhost.find_exchange(leaving->exchange) == nullptr) return false;
  const auto& headers = leaving->message->properties.headers;
  auto targets = vhost.route(leaving->exchange, leaving->routing_key, leaving->extra_keys,
                             headers ? &*headers : nullptr);
  if (targets.empty()) return false;
  leaving->refused = false;
  leaving->outstanding = 1;  // the offer's own: no answer settles it before every target is asked
  for (const QueuePtr& target : targets) {
    // A cycle with no rejection in it ends here, as in RabbitMQ.
    if (leaving->dead_letter && dead_letter_cycle(*leaving->message, target->name)) continue;
    const auto& accepted = leaving->accepted_by;
    if (std::find(accepted.begin(), accepted.end(), target->name) != accepted.end()) continue;
    ++leaving->outstanding;
    enqueue(target, leaving->message, [this, leaving, name = target->name](bool taken) {
      if (taken) {
        leaving->accepted_by.push_back(name);
      } else {
        leaving->refused = true;
      }
      if (--leaving->outstanding == 0) settle(leaving);
    });
  }
  if (--leaving->outstanding == 0) settle(leaving);
  return true;
}

void Broker::settle(const std::shared_ptr<HandOver>& leaving) {
  if (leaving->refused && leaving->at_least_once) {
    retain(leaving);
  } else {
    finish_hand_over(*leaving);
  }
}

void Broker::retain(const std::shared_ptr<HandOver>& leaving) {
  QueuePtr source = leaving->source.lock();
  if (!source || source->vhost == nullptr || source->vhost->find_queue(source->name) != source) {
    return;  // deleted: its letters went with it
  }
  uint64_t bytes = retained_bytes(*leaving);
  source->retained_dead_letter_bytes += bytes;
  memory_used_bytes_ += bytes;
  source->retained_dead_letters.push_back(leaving);
  if (source->dead_letter_retry_at_ms == UINT64_MAX) {
    source->dead_letter_retry_at_ms = wall_clock_ms_ + dead_letter_retry_interval_ms;
    schedule(source);
  }
}

void Broker::finish_hand_over(const HandOver& leaving) {
  if (leaving.id.value == 0) return;
  QueuePtr source = leaving.source.lock();
  if (!source || source->group == 0) return;
  if (source->handed_over.empty()) sources_handed_over_.push_back(source);
  source->handed_over.push_back(leaving.id);
}

void Broker::flush_hand_overs() {
  auto sources = std::move(sources_handed_over_);
  sources_handed_over_.clear();
  for (const auto& weak : sources) {
    QueuePtr source = weak.lock();
    if (!source || source->handed_over.empty()) continue;
    auto ids = std::move(source->handed_over);
    source->handed_over.clear();
    execute(source, command(queue::HandedOverCommand{std::move(ids)}));
  }
}

void Broker::retry_dead_letters(const QueuePtr& queue) {
  queue->dead_letter_retry_at_ms = UINT64_MAX;
  auto retained = std::move(queue->retained_dead_letters);
  queue->retained_dead_letters.clear();
  memory_used_bytes_ -= queue->retained_dead_letter_bytes;
  queue->retained_dead_letter_bytes = 0;
  for (const auto& leaving : retained) {
    if (!offer(leaving)) retain(leaving);
  }
}

void Broker::park(const QueuePtr& from, const std::shared_ptr<HandOver>& leaving,
                  const queue::Message& message) {
  VirtualHost& vhost = *from->vhost;
  QueuePtr parking = vhost.find_queue(std::string(parking_queue_name));
  if (!parking) {
    auto declared = declare_queue(
        vhost,
        QueueDeclare{.name = std::string(parking_queue_name), .durable = true, .arguments = {}}, 0);
    if (!declared.ok()) return;  // cannot happen: a plain durable queue with no arguments
    parking = declared.value();
  }
  DeadLetterRoute route =
      make_dead_letter(message, from->name, queue::DeadLetterReason::delivery_limit, "",
                       std::string(parking_queue_name), wall_clock_ms_ / 1000);
  ++vhost.messages_parked;
  enqueue(parking, route.message, [this, leaving](bool taken) {
    if (taken) finish_hand_over(*leaving);  // else still leaving: offered again at a restart
  });
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

void Broker::delete_if_unused(const QueuePtr& queue) {
  if (queue->auto_delete && queue->had_consumer && queue->machine.consumer_count() == 0 &&
      queue->vhost != nullptr && queue->vhost->find_queue(queue->name) == queue) {
    delete_queue(*queue->vhost, queue->name);
  }
}

size_t Broker::delete_queue(VirtualHost& vhost, const std::string& name) {
  QueuePtr queue = vhost.remove_queue(name);
  if (!queue) return 0;
  memory_used_bytes_ -= queue->retained_dead_letter_bytes;  // they go with their queue
  if (queue->group != 0) {
    queue_groups_.erase(queue->group);
    if (queue_store_ != nullptr) queue_store_->remove_group(queue->group);
    // What was proposed goes with the queue: a publish to it is done (as if consumed at once).
    queue::CommandEffects nothing;
    finish_pending_commands(queue, &nothing);
  }
  if (auto waiters = flow_waiters_.find(queue.get()); waiters != flow_waiters_.end()) {
    auto released = std::move(waiters->second);
    flow_waiters_.erase(waiters);
    for (BlockedPublisher* publisher : released) publisher->flow_released(queue.get());
  }
  size_t ready = queue->machine.ready_count();
  for (HolderId consumer : queue->machine.consumer_ids()) {
    auto it = sinks_.find(consumer.value);
    if (it != sinks_.end()) it->second->consumer_cancelled_by_broker(consumer);
  }
  return ready;
}

namespace {

bool durable_queue(const Queue& queue) {
  return queue.durable && queue.exclusive_owner == 0;
}

}  // namespace

Definitions Broker::current_definitions() const {
  Definitions definitions;
  for (const auto& [vhost_name, vhost_ptr] : virtual_hosts_) {
    const VirtualHost& vhost = *vhost_ptr;  // (clang 14 cannot capture a structured binding)
    auto durable_destination = [&vhost](const Binding& binding) {
      if (binding.destination_is_queue) {
        auto it = vhost.queues().find(binding.destination);
        return it != vhost.queues().end() && durable_queue(*it->second);
      }
      auto it = vhost.exchanges().find(binding.destination);
      return it != vhost.exchanges().end() && it->second.durable;
    };
    for (const auto& [name, exchange] : vhost.exchanges()) {
      if (!exchange.durable || name.empty()) continue;
      bool predeclared = name.starts_with("amq.");
      if (!predeclared) {
        std::string type(exchange.delayed ? delayed_exchange_type
                                          : exchange_type_name(exchange.type));
        uint64_t group = exchange.delay_queue ? exchange.delay_queue->group : 0;
        definitions.apply(DeclareExchange{{vhost_name, name, type, exchange.auto_delete,
                                           exchange.internal, exchange.arguments, group}});
      }
      for (const Binding& binding : exchange.bindings) {
        if (durable_destination(binding)) definitions.apply(Bind{{vhost_name, name, binding}});
      }
    }
    for (const auto& [name, queue] : vhost.queues()) {
      if (!durable_queue(*queue)) continue;
      definitions.apply(
          DeclareQueue{{vhost_name, name, queue->group, queue->auto_delete, queue->arguments}});
    }
  }
  return definitions;
}

void Broker::persist_definitions() {
  if (definition_store_ == nullptr) return;
  uint64_t generation = 0;
  for (const auto& [name, vhost] : virtual_hosts_) generation += vhost->definitions_generation();
  if (generation == definitions_generation_seen_) return;
  definitions_generation_seen_ = generation;
  Definitions now = current_definitions();
  if (now == recorded_definitions_) return;
  // The difference, in an order that replays cleanly: unbinds, deletes, declares, binds.
  std::vector<MetadataCommand> commands;
  const auto& old_bindings = recorded_definitions_.bindings();
  const auto& new_bindings = now.bindings();
  for (const auto& binding : old_bindings) {
    if (std::find(new_bindings.begin(), new_bindings.end(), binding) == new_bindings.end()) {
      commands.push_back(Unbind{binding});
    }
  }
  for (const auto& [key, queue] : recorded_definitions_.queues()) {
    if (!now.queues().contains(key)) commands.push_back(DeleteQueue{key.first, key.second});
  }
  for (const auto& [key, exchange] : recorded_definitions_.exchanges()) {
    if (!now.exchanges().contains(key)) commands.push_back(DeleteExchange{key.first, key.second});
  }
  for (const auto& [key, exchange] : now.exchanges()) {
    auto old = recorded_definitions_.exchanges().find(key);
    if (old == recorded_definitions_.exchanges().end() || !(old->second == exchange)) {
      commands.push_back(DeclareExchange{exchange});
    }
  }
  for (const auto& [key, queue] : now.queues()) {
    auto old = recorded_definitions_.queues().find(key);
    if (old == recorded_definitions_.queues().end() || !(old->second == queue)) {
      commands.push_back(DeclareQueue{queue});
    }
  }
  for (const auto& binding : new_bindings) {
    if (std::find(old_bindings.begin(), old_bindings.end(), binding) == old_bindings.end()) {
      commands.push_back(Bind{binding});
    }
  }
  if (definition_store_->record(commands)) {
    recorded_definitions_ = std::move(now);
  } else {
    ++definition_failures_;
    definitions_generation_seen_ = 0;  // try again after the next change
  }
}

void Broker::restore_definitions(const Definitions& definitions) {
  for (const auto& [key, exchange] : definitions.exchanges()) {
    VirtualHost* vhost = find_virtual_host(key.first);
    if (vhost == nullptr) continue;
    ExchangeDeclare declare{.name = exchange.name,
                            .type = exchange.type,
                            .passive = false,
                            .durable = true,
                            .auto_delete = exchange.auto_delete,
                            .internal = exchange.internal,
                            .arguments = exchange.arguments};
    if (exchange.group != 0 && queue_store_ != nullptr && queue_store_->has_group(exchange.group)) {
      // Its delayed messages wait in that group's log.
      if (vhost->declare_exchange(declare).ok()) {
        const Exchange* declared = vhost->find_exchange(exchange.name);
        if (declared != nullptr && declared->delay_queue) {
          attach_group(declared->delay_queue, exchange.group);
        }
      }
      continue;
    }
    (void)declare_exchange(*vhost, declare);
  }
  for (const auto& [key, queue] : definitions.queues()) {
    VirtualHost* vhost = find_virtual_host(key.first);
    if (vhost == nullptr) continue;
    auto declared = vhost->declare_queue(QueueDeclare{.name = queue.name,
                                                      .passive = false,
                                                      .durable = true,
                                                      .exclusive = false,
                                                      .auto_delete = queue.auto_delete,
                                                      .arguments = queue.arguments},
                                         0);
    if (!declared.ok()) continue;
    const QueuePtr& restored = declared.value();
    restored->last_used_ms = wall_clock_ms_;
    if (queue_store_ == nullptr) continue;
    if (queue.group != 0 && queue_store_->has_group(queue.group)) {
      attach_group(restored, queue.group);
    } else if (uint64_t group = queue_store_->create_group(); group != 0) {
      // Its log was removed before its definition was (a crash while it was deleted): it
      // starts again, empty, and the definition records its new group below.
      attach_group(restored, group);
    }
  }
  for (const BindingDefinition& binding : definitions.bindings()) {
    VirtualHost* vhost = find_virtual_host(binding.vhost);
    if (vhost != nullptr) (void)vhost->bind(binding.source, binding.binding, 0);
  }
  // What was kept is what is recorded: any difference (a queue's new group) is recorded now.
  recorded_definitions_ = definitions;
  definitions_generation_seen_ = 0;
  persist_definitions();
}

std::set<uint64_t> Broker::queue_groups() const {
  std::set<uint64_t> groups;
  for (const auto& [group, queue] : queue_groups_) groups.insert(group);
  return groups;
}

Result<void, ProtocolError> Broker::declare_exchange(VirtualHost& vhost,
                                                     const ExchangeDeclare& declare) {
  auto declared = vhost.declare_exchange(declare);
  if (!declared.ok()) return declared;
  const Exchange* exchange = vhost.find_exchange(declare.name);
  if (exchange == nullptr || !exchange->durable || !exchange->delay_queue ||
      exchange->delay_queue->group != 0 || queue_store_ == nullptr) {
    return declared;
  }
  // A durable delayed exchange keeps its delayed messages in a log of their own.
  uint64_t group = queue_store_->create_group();
  if (group == 0) {
    (void)vhost.delete_exchange(declare.name, false);
    return unexpected(ProtocolError{amqp::ReplyCode::internal_error,
                                    "cannot create the log of exchange '" + declare.name +
                                        "' in vhost '" + vhost.name() + "'"});
  }
  attach_group(exchange->delay_queue, group);
  return declared;
}

Result<void, ProtocolError> Broker::delete_exchange(VirtualHost& vhost, const std::string& name,
                                                    bool if_unused) {
  const Exchange* exchange = vhost.find_exchange(name);
  QueuePtr delay_queue = exchange != nullptr ? exchange->delay_queue : nullptr;
  auto deleted = vhost.delete_exchange(name, if_unused);
  if (deleted.ok() && delay_queue && delay_queue->group != 0) {
    // Its delayed messages go with it.
    queue_groups_.erase(delay_queue->group);
    if (queue_store_ != nullptr) queue_store_->remove_group(delay_queue->group);
    delay_queue->group = 0;
  }
  return deleted;
}

Result<QueuePtr, ProtocolError> Broker::declare_queue(VirtualHost& vhost,
                                                      const QueueDeclare& declare,
                                                      ConnectionId owner) {
  auto declared = vhost.declare_queue(declare, owner);
  if (!declared.ok()) return declared;
  const QueuePtr& queue = declared.value();
  if (queue_store_ == nullptr || queue->group != 0 || !durable_queue(*queue)) return declared;
  uint64_t group = queue_store_->create_group();
  if (group == 0) {
    vhost.remove_queue(queue->name);
    return unexpected(ProtocolError{
        amqp::ReplyCode::internal_error,
        "cannot create the log of queue '" + queue->name + "' in vhost '" + vhost.name() + "'"});
  }
  attach_group(queue, group);
  return declared;
}

void Broker::attach_group(const QueuePtr& queue, uint64_t group) {
  queue->group = group;
  queue->machine.keep_bodies_of(durable_queue_cached_bodies, durable_queue_cached_body_bytes);
  queue->machine.keep_leaving_messages();
  queue_groups_[group] = queue;
}

void Broker::execute(const QueuePtr& queue, queue::QueueCommand command, CommandDone done) {
  if (queue->group == 0 || queue_store_ == nullptr) {
    run(queue, command, done, 0);
    return;
  }
  std::string encoded = queue::encode_command(command);
  uint64_t bytes = encoded.size();
  auto position = queue_store_->propose(queue->group, std::move(encoded));
  if (!position) {
    if (done) done(queue, nullptr);
    return;
  }
  queue->pending_bytes += bytes;
  queue->pending_commands.emplace(
      position->index,
      Queue::PendingCommand{position->term, std::move(command), std::move(done), bytes});
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
  auto& pending = queue->pending_commands;
  // A proposal at or below this index that did not come back with its own term was replaced by
  // another leader's entry: it was never committed, and is not done.
  while (!pending.empty() &&
         (pending.begin()->first < index ||
          (pending.begin()->first == index && pending.begin()->second.term != position.term))) {
    auto node = pending.extract(pending.begin());
    queue->pending_bytes -= node.mapped().bytes;
    if (node.mapped().done) node.mapped().done(queue, nullptr);
  }
  if (!pending.empty() && pending.begin()->first == index) {
    // Proposed here: run the command as it was made (the same bytes are in the log).
    auto node = pending.extract(pending.begin());
    queue->pending_bytes -= node.mapped().bytes;
    run(queue, node.mapped().command, node.mapped().done, index);
  } else if (auto command = queue::decode_command(data); command.ok()) {
    run(queue, *command, {}, index);
  } else {
    ++undecodable_entries_;
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
  if (queue->log_bytes_since_snapshot < due || queue->group == 0 || queue_store_ == nullptr) {
    return;
  }
  uint64_t cut = queue->machine.reference_cut(queue_snapshot_carried_bytes_);
  auto snapshot = queue->machine.snapshot(
      [this, &queue](uint64_t stored_at) { return load_message(*queue, stored_at); }, cut);
  if (!snapshot.ok()) return;  // a body could not be read: try again later
  queue->log_bytes_since_snapshot = 0;
  queue->last_snapshot_bytes = snapshot->size();
  if (snapshot->size() > queue_snapshot_bytes_max) return;  // too many messages: try later
  queue_store_->compact(queue->group, queue->applied_index, std::move(*snapshot),
                        cut == UINT64_MAX ? 0 : cut);
}

Result<void, std::string> Broker::restore_queue(uint64_t group, std::string_view snapshot) {
  auto it = queue_groups_.find(group);
  QueuePtr queue = it == queue_groups_.end() ? nullptr : it->second.lock();
  if (!queue) return unexpected("no queue has group " + std::to_string(group));
  return queue->machine.restore(snapshot);
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
}

void Broker::finish_pending_commands(const QueuePtr& queue, const queue::CommandEffects* effects) {
  auto pending = std::move(queue->pending_commands);
  queue->pending_commands.clear();
  queue->pending_bytes = 0;
  for (auto& [index, command] : pending) {
    if (command.done) command.done(queue, effects);
  }
}

void Broker::end_replay() {
  replaying_ = false;
  for (auto& [group, weak] : queue_groups_) {
    QueuePtr queue = weak.lock();
    if (!queue || queue->vhost == nullptr) continue;
    auto leaving = queue->machine.leaving_messages();
    if (!leaving.empty()) hand_over(queue, std::move(leaving));
  }
  flush_hand_overs();
}

void Broker::set_node_id(uint64_t node) {
  HAMQ_VERIFY(node > 0 && node < (uint64_t{1} << (64 - queue::holder_node_shift)),
              "node id out of range");
  node_id_ = node;
}

void Broker::detach_previous_holders() {
  // This node's holders of its previous life (and those logged before holders carried a node):
  // another node's consumers are that node's to detach.
  auto previous_life = [this](HolderId holder) {
    return holder.node() == node_id_ || holder.node() == 0;
  };
  for (auto& [group, weak] : queue_groups_) {
    QueuePtr queue = weak.lock();
    if (!queue) continue;
    // Consumers first: a message given back must not go to a consumer of the previous life.
    for (HolderId consumer : queue->machine.consumer_ids()) {
      if (previous_life(consumer)) execute(queue, command(queue::CancelCommand{consumer}));
    }
    for (HolderId holder : queue->machine.holder_ids()) {
      if (previous_life(holder)) execute(queue, command(queue::DetachCommand{holder}));
    }
  }
}

size_t Broker::pending_command_count() const {
  size_t count = 0;
  for (const auto& [group, weak] : queue_groups_) {
    if (QueuePtr queue = weak.lock()) count += queue->pending_commands.size();
  }
  return count;
}

}  // namespace hamq::broker
