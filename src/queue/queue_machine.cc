#include "queue/queue_machine.h"

#include <algorithm>
#include <set>

#include "common/verify.h"

namespace hamq::queue {

QueueMachine::QueueMachine(QueueOptions options)
    : options_(options), levels_(size_t{options.max_priority} + 1) {}

std::optional<uint64_t> message_expiration_ms(const Message& message) {
  const auto& text = message.properties.expiration;
  // At most 18 digits: no overflow, and far beyond any TTL the channel accepts.
  if (!text || text->empty()) return std::nullopt;
  std::string_view digits = *text;
  if (digits[0] == '+' || digits[0] == '-') digits.remove_prefix(1);  // "-0" is 0, as in Erlang
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  if ((*text)[0] == '-' && digits.find_first_not_of('0') != std::string_view::npos) {
    return std::nullopt;
  }
  uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  return value;
}

uint8_t QueueMachine::level_index(const Entry& entry) const {
  return std::min(entry.priority, options_.max_priority);
}

QueueMachine::Level& QueueMachine::level_of(const Entry& entry) {
  return levels_[level_index(entry)];
}

void QueueMachine::put_back(MessageId id, Entry entry) {
  ready_body_bytes_ += entry.body_bytes;
  if (entry.expires_at_ms != never) watch_expiry(id, entry);
  Level& level = level_of(entry);
  level.returned.emplace(id, std::move(entry));
  ++ready_count_;
}

void QueueMachine::return_entry(MessageId id, Entry entry) {
  ++entry.delivery_count;
  if (options_.delivery_limit && entry.delivery_count > *options_.delivery_limit) {
    remove(id, std::move(entry), DeadLetterReason::delivery_limit);
    return;
  }
  put_back(id, std::move(entry));
}

void QueueMachine::advance_time(uint64_t now_ms) {
  now_ms_ = now_ms;  // (the stamp's: a leader's clock may be behind the last one's)
  expire_due();
}

void QueueMachine::watch_expiry(MessageId id, const Entry& entry) {
  expiries_.push_back(Expiry{entry.expires_at_ms, id, level_index(entry)});
  std::push_heap(expiries_.begin(), expiries_.end(), std::greater<>{});
}

void QueueMachine::expire_due() {
  while (!expiries_.empty() && expiries_.front().at_ms <= now_ms_) {
    std::pop_heap(expiries_.begin(), expiries_.end(), std::greater<>{});
    Expiry expiry = expiries_.back();
    expiries_.pop_back();
    expire_one(expiry);
  }
}

void QueueMachine::expire_one(const Expiry& expiry) {
  Level& level = levels_[expiry.level];
  auto returned = level.returned.find(expiry.id);
  if (returned != level.returned.end()) {
    if (returned->second.expires_at_ms != expiry.at_ms) return;
    Entry entry = std::move(returned->second);
    level.returned.erase(returned);
    --ready_count_;
    ready_body_bytes_ -= entry.body_bytes;
    remove(expiry.id, std::move(entry), DeadLetterReason::expired);
    return;
  }
  auto fresh = std::lower_bound(
      level.fresh.begin(), level.fresh.end(), expiry.id,
      [](const std::pair<MessageId, Entry>& item, MessageId id) { return item.first < id; });
  if (fresh == level.fresh.end() || fresh->first != expiry.id || fresh->second.tombstone ||
      fresh->second.expires_at_ms != expiry.at_ms) {
    return;  // delivered, settled or expired already
  }
  Entry entry = std::move(fresh->second);
  fresh->second.message = nullptr;
  fresh->second.tombstone = true;
  ++level.tombstones;
  --ready_count_;
  ready_body_bytes_ -= entry.body_bytes;
  remove(expiry.id, std::move(entry), DeadLetterReason::expired);
  while (!level.fresh.empty() && level.fresh.front().second.tombstone) {
    level.fresh.pop_front();
    --level.tombstones;
  }
  if (level.tombstones > 64 && level.tombstones * 2 > level.fresh.size()) {
    std::erase_if(level.fresh, [](const auto& item) { return item.second.tombstone; });
    level.tombstones = 0;
  }
}

void QueueMachine::expire(uint64_t now_ms, std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  deliver(deliveries);
}

std::optional<uint64_t> QueueMachine::next_expiry_ms() const {
  if (expiries_.empty()) return std::nullopt;
  return expiries_.front().at_ms;
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

void QueueMachine::remove(MessageId id, Entry entry, std::optional<DeadLetterReason> reason) {
  // Past the delivery limit is never a silent drop (the broker parks what has no exchange).
  if (!reason || (!options_.dead_letters && *reason != DeadLetterReason::delivery_limit)) {
    drop(size_of(entry));
    return;
  }
  if (!keep_leaving_) {
    drop(size_of(entry));
    dead_letters_.push_back(DeadLetter{std::move(entry.message), *reason, entry.stored_at, {}});
    return;
  }
  dead_letters_.push_back(DeadLetter{entry.message, *reason, entry.stored_at, id});
  evict(entry);  // the log has it, if it is stored
  leaving_.emplace(id.value, Leaving{std::move(entry), *reason});
}

void QueueMachine::handed_over(const std::vector<MessageId>& ids) {
  for (MessageId id : ids) {
    auto it = leaving_.find(id.value);
    if (it == leaving_.end()) continue;
    drop(size_of(it->second.entry));
    leaving_.erase(it);
  }
}

uint64_t QueueMachine::live_bytes() const {
  uint64_t bytes = ready_body_bytes_ +
                   (ready_count_ + checked_out_.size() + leaving_.size()) * message_overhead_bytes;
  for (const auto& [id, checked_out] : checked_out_) bytes += checked_out.entry.body_bytes;
  for (const auto& [id, leaving] : leaving_) bytes += leaving.entry.body_bytes;
  return bytes;
}

std::vector<DeadLetter> QueueMachine::leaving_messages() const {
  std::vector<DeadLetter> letters;
  for (const auto& [id, leaving] : leaving_) {
    letters.push_back(
        DeadLetter{leaving.entry.message, leaving.reason, leaving.entry.stored_at, MessageId{id}});
  }
  return letters;
}

EnqueueResult QueueMachine::enqueue(MessagePtr message, uint64_t now_ms,
                                    std::vector<Delivery>& deliveries, uint64_t stored_at) {
  // The lower of the queue's and the message's TTL, from now (reference §12).
  std::optional<uint64_t> ttl_ms = options_.message_ttl_ms;
  if (auto own = message_expiration_ms(*message)) ttl_ms = std::min(ttl_ms.value_or(*own), *own);
  return add(std::move(message), ttl_ms, now_ms, deliveries, stored_at);
}

EnqueueResult QueueMachine::enqueue_for(MessagePtr message, uint64_t ttl_ms, uint64_t now_ms,
                                        std::vector<Delivery>& deliveries, uint64_t stored_at) {
  return add(std::move(message), ttl_ms, now_ms, deliveries, stored_at);
}

QueueMachine::Entry QueueMachine::new_entry(MessagePtr message, uint64_t stored_at) {
  Entry entry;
  entry.body_bytes = static_cast<uint32_t>(message->body.size());
  entry.priority = message->properties.priority.value_or(0);
  entry.message = std::move(message);
  entry.stored_at = stored_at;
  hold(size_of(entry));
  return entry;
}

std::string dedup_key(const Message& message) {
  if (message.properties.headers) {
    if (const amqp::FieldValue* header =
            message.properties.headers->find("x-deduplication-header")) {
      if (const auto* text = std::get_if<std::string>(&header->value)) return *text;
      if (auto number = header->as_integer()) return std::to_string(*number);
    }
  }
  return message.properties.message_id.value_or("");
}

bool QueueMachine::seen_within_window(const std::string& key) {
  uint64_t max_keys = options_.dedup_window_messages.value_or(dedup_messages_default);
  while (!seen_order_.empty() &&
         (seen_order_.size() > max_keys ||
          (options_.dedup_window_ms && now_ms_ >= seen_order_.front().at_ms &&
           now_ms_ - seen_order_.front().at_ms >= *options_.dedup_window_ms))) {
    seen_keys_.erase(seen_order_.front().key);
    seen_order_.pop_front();
  }
  return seen_keys_.contains(key);
}

EnqueueResult QueueMachine::add(MessagePtr message, std::optional<uint64_t> ttl_ms, uint64_t now_ms,
                                std::vector<Delivery>& deliveries, uint64_t stored_at) {
  advance_time(now_ms);
  std::string key = options_.deduplicates() ? dedup_key(*message) : std::string();
  if (!key.empty() && seen_within_window(key)) {
    ++deduplicated_;
    return EnqueueResult::accepted;  // it is there, or was
  }
  uint64_t body_bytes = message->body.size();
  if (options_.overflow != Overflow::drop_head && over_limit(1, body_bytes)) {
    if (options_.overflow == Overflow::reject_publish_dlx && options_.dead_letters) {
      // Never in the queue, but it leaves through it: an id of its own when it is kept leaving.
      MessageId id{keep_leaving_ ? next_id_++ : 0};
      remove(id, new_entry(std::move(message), stored_at), DeadLetterReason::maxlen);
    }
    return EnqueueResult::rejected;
  }
  MessageId id{next_id_++};
  Entry entry = new_entry(std::move(message), stored_at);
  if (ttl_ms) entry.expires_at_ms = *ttl_ms >= never - now_ms_ ? never - 1 : now_ms_ + *ttl_ms;
  Expiry expiry{entry.expires_at_ms, id, level_index(entry)};
  Level& level = level_of(entry);
  level.fresh.emplace_back(id, std::move(entry));
  ++ready_count_;
  ready_body_bytes_ += body_bytes;
  deliver(deliveries);
  // Not taken at once, and behind enough others: its body waits on disk.
  bool over_cache = ready_count_ > body_cache_count_ || ready_body_bytes_ > body_cache_bytes_;
  if (over_cache && !level.fresh.empty() && level.fresh.back().first == id) {
    evict(level.fresh.back().second);
  }
  // Watched only now, so that even a TTL of 0 lets a waiting consumer take it first.
  if (expiry.at_ms != never) {
    expiries_.push_back(expiry);
    std::push_heap(expiries_.begin(), expiries_.end(), std::greater<>{});
  }
  // drop-head: the oldest ready messages make room (reference §11.4).
  while (ready_count_ > 0 && over_limit(0, 0)) {
    auto [oldest, head] = take_next();
    remove(oldest, std::move(head), DeadLetterReason::maxlen);
  }
  // A TTL of 0: gone unless a consumer took it at once.
  expire_due();
  if (!key.empty()) {
    seen_keys_.emplace(key, now_ms_);
    seen_order_.push_back(SeenKey{std::move(key), now_ms_});
    seen_within_window("");  // (the count may be over by one now)
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

std::vector<HolderId> QueueMachine::holder_ids() const {
  std::set<HolderId> ids;
  for (const Consumer& c : consumers_) ids.insert(c.id);
  for (const auto& [id, checked_out] : checked_out_) ids.insert(checked_out.holder);
  return {ids.begin(), ids.end()};
}

std::vector<Delivery> QueueMachine::held_by(const std::set<HolderId>& holders) const {
  std::vector<Delivery> held;
  for (const auto& [id, checked_out] : checked_out_) {
    if (holders.contains(checked_out.holder)) {
      held.push_back(delivery_of(checked_out.holder, MessageId{id}, checked_out.entry));
    }
  }
  std::sort(held.begin(), held.end(),
            [](const Delivery& a, const Delivery& b) { return a.id < b.id; });
  return held;
}

AttachResult QueueMachine::attach(HolderId consumer, ConsumerOptions options, uint64_t now_ms,
                                  std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  if (find_consumer(consumer) != nullptr) return AttachResult::already_attached;
  if (has_exclusive_consumer() || (options.exclusive && !consumers_.empty())) {
    return AttachResult::exclusive_conflict;
  }
  consumers_.push_back(Consumer{consumer, options, 0});
  deliver(deliveries);
  return AttachResult::attached;
}

void QueueMachine::deliver_ready(uint64_t now_ms, std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  deliver(deliveries);
}

void QueueMachine::suspend(HolderId consumer) {
  if (Consumer* c = find_consumer(consumer)) c->suspended = true;
}

void QueueMachine::resume(HolderId consumer, uint64_t now_ms, std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
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

size_t QueueMachine::detach(HolderId holder, uint64_t now_ms, std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
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
      return_entry(MessageId{it->first}, std::move(it->second.entry));
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

void QueueMachine::settle(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
                          std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) drop(size_of(*entry));
  }
  deliver(deliveries);
}

void QueueMachine::requeue(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
                           std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) return_entry(id, std::move(*entry));
  }
  deliver(deliveries);
}

void QueueMachine::discard(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
                           std::vector<Delivery>& deliveries) {
  advance_time(now_ms);
  Consumer* consumer = find_consumer(holder);
  for (MessageId id : ids) {
    if (auto entry = take_checked_out(holder, id, consumer)) {
      remove(id, std::move(*entry), DeadLetterReason::rejected);
    }
  }
  deliver(deliveries);
}

std::optional<Delivery> QueueMachine::get(HolderId holder, bool no_ack, uint64_t now_ms) {
  advance_time(now_ms);
  if (ready_count() == 0) return std::nullopt;
  auto [id, entry] = take_next();
  Delivery delivery = delivery_of(holder, id, entry);
  if (no_ack) {
    drop(size_of(entry));
  } else {
    check_out(holder, id, std::move(entry));
  }
  return delivery;
}

size_t QueueMachine::purge() {
  size_t count = ready_count();
  for (Level& level : levels_) {
    for (const auto& [id, entry] : level.fresh) {
      if (!entry.tombstone) drop(size_of(entry));
    }
    for (const auto& [id, entry] : level.returned) drop(size_of(entry));
    level.fresh.clear();
    level.tombstones = 0;
    level.returned.clear();
  }
  // Records of messages still checked out go too: a returned message is watched again.
  expiries_.clear();
  ready_count_ = 0;
  ready_body_bytes_ = 0;
  return count;
}

namespace {

// A proposer's admitted numbers once `floor` is taken: the mark raised to it, the numbers
// right above the mark joining it. (`above` holds numbers admitted after a gap: only from
// snapshots of a version that admitted those.)
template <typename Proposer>
void take_floor(Proposer& p, uint64_t floor) {
  if (floor > 0 && floor - 1 > p.low) {
    p.low = floor - 1;
    p.above.erase(p.above.begin(), p.above.upper_bound(p.low));
  }
  while (!p.above.empty() && *p.above.begin() == p.low + 1) {
    p.above.erase(p.above.begin());
    ++p.low;
  }
}

template <typename Proposer>
QueueMachine::Admission admission_of(const Proposer& p, uint64_t seq) {
  if (seq <= p.low || p.above.contains(seq)) return QueueMachine::Admission::copy;
  return seq == p.low + 1 ? QueueMachine::Admission::first : QueueMachine::Admission::early;
}

}  // namespace

QueueMachine::Admission QueueMachine::admit(uint64_t proposer, uint64_t seq, uint64_t floor) {
  auto it = proposers_.find(proposer);
  if (it == proposers_.end()) {
    // A new life of its node: its earlier lives send nothing more. (A late copy from an earlier
    // life retires nothing newer.)
    std::erase_if(proposers_, [proposer](const auto& item) {
      return item.first >> holder_node_shift == proposer >> holder_node_shift &&
             item.first < proposer;
    });
    it = proposers_.emplace(proposer, Proposer{}).first;
  }
  Proposer& p = it->second;
  take_floor(p, floor);
  Admission admission = admission_of(p, seq);
  if (admission == Admission::first) {
    ++p.low;
    take_floor(p, 0);
  }
  return admission;
}

QueueMachine::Admission QueueMachine::admission(uint64_t proposer, uint64_t seq,
                                                uint64_t floor) const {
  auto it = proposers_.find(proposer);
  Proposer p = it == proposers_.end() ? Proposer{} : it->second;
  take_floor(p, floor);
  return admission_of(p, seq);
}

bool QueueMachine::took_hand_over(const HandOverKey& key) const {
  auto it = handed_in_.find(key.source);
  return it != handed_in_.end() && it->second.ids.contains(key.id);
}

void QueueMachine::record_hand_over(const HandOverKey& key) {
  HandedIn& in = handed_in_[key.source];
  if (!in.ids.insert(key.id).second) return;
  in.order.push_back(key.id);
  if (in.order.size() > hand_over_window) {
    in.ids.erase(in.order.front());
    in.order.pop_front();
  }
}

bool QueueMachine::admitted(uint64_t proposer, uint64_t seq) const {
  auto it = proposers_.find(proposer);
  return it != proposers_.end() && (seq <= it->second.low || it->second.above.contains(seq));
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
    if (!level->returned.empty()) {
      auto node = level->returned.extract(level->returned.begin());
      ready_body_bytes_ -= node.mapped().body_bytes;
      return {node.key(), std::move(node.mapped())};
    }
    while (level->fresh.front().second.tombstone) {
      level->fresh.pop_front();
      --level->tombstones;
    }
    auto next = std::move(level->fresh.front());
    level->fresh.pop_front();
    ready_body_bytes_ -= next.second.body_bytes;
    return next;
  }
  HAMQ_VERIFY(false, "ready_count_ says there are ready messages but no level has one");
}

void QueueMachine::deliver(std::vector<Delivery>& deliveries) {
  expire_due();  // a returned message may be past its time
  while (ready_count() > 0) {
    Consumer* consumer = next_consumer();
    if (consumer == nullptr) return;
    auto [id, entry] = take_next();
    deliveries.push_back(delivery_of(consumer->id, id, entry));
    if (consumer->options.no_ack) {
      drop(size_of(entry));
    } else {
      ++consumer->checked_out;
      if (consumer->options.shared_credit != nullptr) --*consumer->options.shared_credit;
      check_out(consumer->id, id, std::move(entry));
    }
  }
}

Delivery QueueMachine::delivery_of(HolderId holder, MessageId id, const Entry& entry) const {
  return Delivery{holder,         id, entry.message, entry.delivery_count > 0, entry.delivery_count,
                  entry.stored_at};
}

void QueueMachine::check_out(HolderId holder, MessageId id, Entry entry) {
  evict(entry);  // a return reads it back
  checked_out_.emplace(id.value, CheckedOut{holder, std::move(entry)});
}

void QueueMachine::evict(Entry& entry) {
  if (!entry.message || entry.stored_at == 0 || body_cache_count_ == SIZE_MAX) return;
  drop(entry.body_bytes);
  entry.message = nullptr;
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
