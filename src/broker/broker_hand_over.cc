// Broker's hand-overs: the messages that leave a queue for others (dead letters, messages past
// their delivery limit parked in the vhost's parking queue, a delayed exchange's messages whose
// time came) are offered to their targets and gone from their source only once every target
// has them (at least once; see HandOver in virtual_host.h).
#include "broker/broker.h"
#include "broker/dead_letter.h"

namespace hamq::broker {

namespace {

// The vhost's parking queue: a plain durable queue, local to every node for now (home 0).
MetadataCommand declare_parking_queue(const std::string& vhost) {
  return DeclareQueue{{vhost, std::string(parking_queue_name), 0, false, {}, true, 0, 0, {}}};
}

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

void Broker::enqueue(const QueuePtr& target, queue::MessagePtr message, const HandOver& from,
                     std::function<void(bool taken)> answered) {
  // Its source's new leader offers again what its old one may have handed over already: the key
  // lets the target take it once.
  std::optional<queue::HandOverKey> key;
  QueuePtr source = from.source.lock();
  if (source && source->group != 0 && from.id.value != 0) {
    key = queue::HandOverKey{source->group, from.id.value};
  }
  execute(target, command(queue::EnqueueCommand{std::move(message), std::nullopt, key}),
          [answered = std::move(answered)](const QueuePtr&, const queue::CommandEffects* effects) {
            // No effects: not done. Effects with no result: the queue was deleted meanwhile,
            // which counts as taken (as if consumed at once).
            answered(effects != nullptr && effects->enqueued != queue::EnqueueResult::rejected);
          });
}

void Broker::dead_letter(const QueuePtr& queue) {
  auto letters = queue->machine.take_dead_letters();
  // A replay's letters were handed over before, or are still leaving: end_replay() sees to them.
  // A follower's are its leader's to hand over (they stay leaving in every replica until then).
  if (replaying_ || queue->vhost == nullptr || !runs_effects(*queue)) return;
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
    enqueue(target, leaving->message, *leaving, [this, leaving, name = target->name](bool taken) {
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
  // No longer its leader: the next one offers them again (they are still leaving).
  if (!runs_effects(*source)) return;
  uint64_t bytes = retained_bytes(*leaving);
  source->retained_dead_letter_bytes += bytes;
  memory_used_bytes_ += bytes;
  source->retained_dead_letters.push_back(leaving);
  if (source->dead_letter_retry_at_ms == UINT64_MAX) {
    source->dead_letter_retry_at_ms = monotonic_ms_ + dead_letter_retry_interval_ms;
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

std::deque<std::shared_ptr<HandOver>> Broker::drop_retained_dead_letters(Queue& queue) {
  queue.dead_letter_retry_at_ms = UINT64_MAX;
  auto retained = std::move(queue.retained_dead_letters);
  queue.retained_dead_letters.clear();
  memory_used_bytes_ -= queue.retained_dead_letter_bytes;
  queue.retained_dead_letter_bytes = 0;
  return retained;
}

void Broker::retry_dead_letters(const QueuePtr& queue) {
  auto retained = drop_retained_dead_letters(*queue);
  for (const auto& leaving : retained) {
    if (!offer(leaving)) retain(leaving);
  }
}

void Broker::park(const QueuePtr& from, const std::shared_ptr<HandOver>& leaving,
                  const queue::Message& message) {
  VirtualHost& vhost = *from->vhost;
  DeadLetterRoute route =
      make_dead_letter(message, from->name, queue::DeadLetterReason::delivery_limit, "",
                       std::string(parking_queue_name), wall_clock_ms_ / 1000);
  ++vhost.messages_parked;
  if (QueuePtr parking = vhost.find_queue(std::string(parking_queue_name))) {
    park_into(parking, leaving, route.message);
    return;
  }
  // Declared the first time it is needed, as any durable queue is.
  change_definitions(
      declare_parking_queue(vhost.name()),
      [this, vhost = &vhost, leaving, message = route.message](const DefinitionResult& declared) {
        QueuePtr parking = vhost->find_queue(std::string(parking_queue_name));
        // Else still leaving its queue: offered again at a restart.
        if (declared.ok() && parking) park_into(parking, leaving, message);
      });
}

void Broker::park_into(const QueuePtr& parking, const std::shared_ptr<HandOver>& leaving,
                       queue::MessagePtr message) {
  enqueue(parking, std::move(message), *leaving, [this, leaving](bool taken) {
    if (taken) finish_hand_over(*leaving);  // else still leaving: offered again at a restart
  });
}

size_t Broker::declare_parking_queues() {
  size_t count = 0;
  for (const auto& [name, vhost] : virtual_hosts_) {
    if (vhost->find_queue(std::string(parking_queue_name))) continue;
    change_definitions(declare_parking_queue(name));
    ++count;
  }
  return count;
}

}  // namespace hamq::broker
