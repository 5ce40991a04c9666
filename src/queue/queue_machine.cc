#include "queue/queue_machine.h"

#include <algorithm>

#include "common/verify.h"

namespace hamq::queue {

QueueMachine::QueueMachine(QueueOptions options)
    : options_(options), levels_(size_t{options.max_priority} + 1) {}

QueueMachine::Level& QueueMachine::level_of(const Entry& entry) {
  uint8_t priority = entry.message->properties.priority.value_or(0);
  return levels_[std::min(priority, options_.max_priority)];
}

void QueueMachine::put_back(MessageId id, Entry entry) {
  ready_body_bytes_ += entry.message->body.size();
  Level& level = level_of(entry);
  level.returned.emplace(id, std::move(entry));
  ++ready_count_;
}

QueueMachine::~QueueMachine() {
  // A deleted queue's messages leave the node's memory with it.
  if (memory_counter_ != nullptr) *memory_counter_ -= held_bytes_;
}

std::string_view dead_letter_reason_name(DeadLetterReason reason) {
  switch (reason) {
    case DeadLetterReason::rejected:
      return "rejected";
    case DeadLetterReason::expired:
      return "expired";
    case DeadLetterReason::maxlen:
      return "maxlen";
    case DeadLetterReason::delivery_limit:
      return "delivery_limit";
  }
  return "rejected";
}

bool QueueMachine::over_limit(uint64_t extra_count, uint64_t extra_bytes) const {
  return (options_.max_length && ready_count_ + extra_count > *options_.max_length) ||
         (options_.max_length_bytes &&
          ready_body_bytes_ + extra_bytes > *options_.max_length_bytes);
}

void QueueMachine::remove(Entry entry, std::optional<DeadLetterReason> reason) {
  drop(size_of(entry));
  if (reason && options_.dead_letters) {
    dead_letters_.push_back(DeadLetter{std::move(entry.message), *reason});
  }
}

EnqueueResult QueueMachine::enqueue(MessagePtr message, uint64_t /*now_ms*/,
                                    std::vector<Delivery>& deliveries) {
  uint64_t body_bytes = message->body.size();
  if (options_.overflow != Overflow::drop_head && over_limit(1, body_bytes)) {
    if (options_.overflow == Overflow::reject_publish_dlx && options_.dead_letters) {
      dead_letters_.push_back(DeadLetter{std::move(message), DeadLetterReason::maxlen});
    }
    return EnqueueResult::rejected;
  }
  MessageId id{next_id_++};
  hold(body_bytes + message_overhead_bytes);
  Entry entry{std::move(message), 0};
  level_of(entry).fresh.emplace_back(id, std::move(entry));
  ++ready_count_;
  ready_body_bytes_ += body_bytes;
  deliver(deliveries);
  // drop-head: the oldest ready messages make room (reference §11.4).
  while (ready_count_ > 0 && over_limit(0, 0)) {
    remove(take_next().second, DeadLetterReason::maxlen);
  }
  return EnqueueResult::accepted;
}

bool QueueMachine::has_exclusive_consumer() const {
  return std::any_of(consumers_.begin(), consumers_.end(),
                     [](const Consumer& c) { return c.options.exclusive; });
}

std::vector<HolderId> QueueMachine::consumer_ids() const {
  std::vector<HolderId> ids;
  for (const Consumer& c : consumers_) ids.push_back(c.id);
  return ids;
}

AttachResult QueueMachine::attach(HolderId consumer, ConsumerOptions options, uint64_t /*now_ms*/,
                                  std::vector<Delivery>& deliveries) {
  if (find_consumer(consumer) != nullptr) return AttachResult::already_attached;
  if (has_exclusive_consumer() || (options.exclusive && !consumers_.empty())) {
    return AttachResult::exclusive_conflict;
  }
  consumers_.push_back(Consumer{consumer, options, 0});
  deliver(deliveries);
  return AttachResult::attached;
}

void QueueMachine::deliver_ready(uint64_t /*now_ms*/, std::vector<Delivery>& deliveries) {
  deliver(deliveries);
}

void QueueMachine::suspend(HolderId consumer) {
  if (Consumer* c = find_consumer(consumer)) c->suspended = true;
}

void QueueMachine::resume(HolderId consumer, uint64_t /*now_ms*/,
                          std::vector<Delivery>& deliveries) {
  if (Consumer* c = find_consumer(consumer)) {
    c->suspended = false;
    deliver(deliveries);
  }
}

void QueueMachine::cancel(HolderId consumer) {
  auto it = std::find_if(consumers_.begin(), consumers_.end(),
                         [consumer](const Consumer& c) { return c.id == consumer; });
  if (it == consumers_.end()) return;
  size_t index = static_cast<size_t>(it - consumers_.begin());
  consumers_.erase(it);
  if (round_robin_next_ > index) --round_robin_next_;
}

size_t QueueMachine::detach(HolderId holder, uint64_t /*now_ms*/,
                            std::vector<Delivery>& deliveries) {
  cancel(holder);
  size_t before = ready_count_;
  release(holder);
  size_t returned = ready_count_ - before;
  deliver(deliveries);
  return returned;
}

void QueueMachine::release(HolderId holder) {
  for (auto it = checked_out_.begin(); it != checked_out_.end();) {
    if (it->second.holder == holder) {
      Entry entry = std::move(it->second.entry);
      ++entry.delivery_count;
      put_back(MessageId{it->first}, std::move(entry));
      it = checked_out_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<QueueMachine::Entry> QueueMachine::take_checked_out(HolderId holder, MessageId id,
                                                                  Consumer* consumer) {
  auto it = checked_out_.find(id.value);
  if (it == checked_out_.end() || it->second.holder != holder) return std::nullopt;
  Entry entry = std::move(it->second.entry);
  checked_out_.erase(it);
  if (consumer != nullptr) --consumer->checked_out;
  return entry;
}

void QueueMachine::settle(HolderId holder, const std::vector<MessageId>& ids, uint64_t /*now_ms*/,
                          std::vector<Delivery>& deliveries) {
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) drop(size_of(*entry));
  }
  deliver(deliveries);
}

void QueueMachine::requeue(HolderId holder, const std::vector<MessageId>& ids, uint64_t /*now_ms*/,
                           std::vector<Delivery>& deliveries) {
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) {
      ++entry->delivery_count;
      put_back(id, std::move(*entry));
    }
  }
  deliver(deliveries);
}

void QueueMachine::discard(HolderId holder, const std::vector<MessageId>& ids, uint64_t /*now_ms*/,
                           std::vector<Delivery>& deliveries) {
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) {
      remove(std::move(*entry), DeadLetterReason::rejected);
    }
  }
  deliver(deliveries);
}

std::optional<Delivery> QueueMachine::get(HolderId holder, bool no_ack, uint64_t /*now_ms*/) {
  if (ready_count() == 0) return std::nullopt;
  auto [id, entry] = take_next();
  Delivery delivery{holder, id, entry.message, entry.delivery_count > 0, entry.delivery_count};
  if (no_ack) {
    drop(size_of(entry));
  } else {
    checked_out_.emplace(id.value, CheckedOut{holder, std::move(entry)});
  }
  return delivery;
}

size_t QueueMachine::purge() {
  size_t count = ready_count();
  for (Level& level : levels_) {
    for (const auto& [id, entry] : level.fresh) drop(size_of(entry));
    for (const auto& [id, entry] : level.returned) drop(size_of(entry));
    level.fresh.clear();
    level.returned.clear();
  }
  ready_count_ = 0;
  ready_body_bytes_ = 0;
  return count;
}

QueueMachine::Consumer* QueueMachine::find_consumer(HolderId id) {
  for (Consumer& c : consumers_) {
    if (c.id == id) return &c;
  }
  return nullptr;
}

QueueMachine::Consumer* QueueMachine::next_consumer() {
  auto has_room = [](const Consumer& c) {
    if (c.suspended) return false;
    if (c.options.no_ack) return true;
    return (c.options.prefetch_count == 0 || c.checked_out < c.options.prefetch_count) &&
           (c.options.shared_credit == nullptr || *c.options.shared_credit > 0);
  };
  if (options_.single_active_consumer) {
    // The earliest attached consumer is the active one; the others wait their turn.
    if (consumers_.empty() || !has_room(consumers_.front())) return nullptr;
    return &consumers_.front();
  }
  std::optional<int64_t> best;
  for (const Consumer& c : consumers_) {
    if (has_room(c) && (!best || c.options.priority > *best)) best = c.options.priority;
  }
  if (!best) return nullptr;
  size_t n = consumers_.size();
  for (size_t step = 0; step < n; ++step) {
    size_t index = (round_robin_next_ + step) % n;
    Consumer& c = consumers_[index];
    if (c.options.priority == *best && has_room(c)) {
      round_robin_next_ = (index + 1) % n;
      return &c;
    }
  }
  HAMQ_VERIFY(false, "a consumer with room was found and then lost");
}

std::pair<MessageId, QueueMachine::Entry> QueueMachine::take_next() {
  HAMQ_VERIFY(ready_count() > 0, "take_next on an empty queue");
  for (auto level = levels_.rbegin(); level != levels_.rend(); ++level) {
    if (level->empty()) continue;
    --ready_count_;
    ready_body_bytes_ -= level->returned.empty()
                             ? level->fresh.front().second.message->body.size()
                             : level->returned.begin()->second.message->body.size();
    if (!level->returned.empty()) {
      auto node = level->returned.extract(level->returned.begin());
      return {node.key(), std::move(node.mapped())};
    }
    auto next = std::move(level->fresh.front());
    level->fresh.pop_front();
    return next;
  }
  HAMQ_VERIFY(false, "ready_count_ says there are ready messages but no level has one");
}

void QueueMachine::deliver(std::vector<Delivery>& deliveries) {
  while (ready_count() > 0) {
    Consumer* consumer = next_consumer();
    if (consumer == nullptr) return;
    auto [id, entry] = take_next();
    deliveries.push_back(
        Delivery{consumer->id, id, entry.message, entry.delivery_count > 0, entry.delivery_count});
    if (consumer->options.no_ack) {
      drop(size_of(entry));
    } else {
      ++consumer->checked_out;
      if (consumer->options.shared_credit != nullptr) --*consumer->options.shared_credit;
      checked_out_.emplace(id.value, CheckedOut{consumer->id, std::move(entry)});
    }
  }
}

void QueueMachine::hold(uint64_t bytes) {
  held_bytes_ += bytes;
  if (memory_counter_ != nullptr) *memory_counter_ += bytes;
}

void QueueMachine::drop(uint64_t bytes) {
  HAMQ_VERIFY(held_bytes_ >= bytes, "a queue dropped more bytes than it held");
  held_bytes_ -= bytes;
  if (memory_counter_ != nullptr) *memory_counter_ -= bytes;
}

}  // namespace hamq::queue
