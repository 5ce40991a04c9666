// QueueMachine::snapshot and restore: a queue's whole state as the snapshot of its Raft group.
//
// Layout (integers big-endian, as on the AMQP wire): a format version; the next message id, the
// queue's time and the round-robin position; the consumers (id, prefetch, priority, flags, how
// many they hold); then every live message: where it is (fresh in a level, returned, checked
// out to a holder, or leaving for another queue), its id, holder, delivery count, expiry time,
// then (version 2) the log index it is stored at, and the message itself (command.h's encoding)
// when that is 0, else its body size and priority (its body is in the log there); a leaving
// message ends with why it leaves; then (version 3) what each proposer's numbered commands have
// been admitted (its id, the number up to which all were, and those admitted above it), and the
// deduplication keys in the window, oldest first (each a long string and when it was taken);
// then (version 4) the hand-overs taken, per source in order of its id: the source, how many,
// and their ids, oldest first. Versions 1 (no log index, always the message), 2 (no proposers)
// and 3 (no hand-overs) still restore. Levels,
// tombstones, the expiry heap and the byte counts are rebuilt on restore.
#include <algorithm>
#include <unordered_map>

#include "amqp/wire.h"
#include "common/verify.h"
#include "queue/command.h"
#include "queue/queue_machine.h"

namespace hamq::queue {

namespace {

constexpr uint8_t snapshot_format_version = 4;
constexpr uint8_t snapshot_format_without_hand_overs = 3;
constexpr uint8_t snapshot_format_without_proposers = 2;
constexpr uint8_t snapshot_format_without_references = 1;
constexpr uint32_t proposer_seqs_max = 1u << 20;
enum class Place : uint8_t { fresh = 0, returned = 1, checked_out = 2, leaving = 3 };
constexpr uint8_t consumer_no_ack = 1, consumer_exclusive = 2, consumer_suspended = 4;

}  // namespace

uint64_t QueueMachine::reference_cut(uint64_t carried_bytes_max) const {
  uint64_t carried = 0;
  std::vector<std::pair<uint64_t, uint64_t>> stored;  // (log index, bytes)
  auto count = [&](const Entry& entry) {
    if (entry.tombstone) return;
    uint64_t bytes = uint64_t{entry.body_bytes} + message_overhead_bytes;
    if (entry.stored_at == 0) {
      carried += bytes;
    } else {
      stored.emplace_back(entry.stored_at, bytes);
    }
  };
  for (const Level& level : levels_) {
    for (const auto& [id, entry] : level.fresh) count(entry);
    for (const auto& [id, entry] : level.returned) count(entry);
  }
  for (const auto& [id, checked_out] : checked_out_) count(checked_out.entry);
  for (const auto& [id, leaving] : leaving_) count(leaving.entry);
  std::sort(stored.begin(), stored.end());
  for (const auto& [stored_at, bytes] : stored) {
    carried += bytes;
    if (carried > carried_bytes_max) return stored_at;
  }
  return UINT64_MAX;
}

Result<std::string, std::string> QueueMachine::snapshot(const BodyLoader& load,
                                                        uint64_t refer_from) {
  // First the bodies it carries into memory: nothing below refer_from refers to the log then.
  std::string failure;
  auto take_in = [&](MessageId id, Entry& entry) {
    if (entry.tombstone || entry.stored_at == 0 || entry.stored_at >= refer_from) return;
    if (!entry.message) {
      entry.message = load(entry.stored_at);
      if (!entry.message) {
        failure = "the body of message " + std::to_string(id.value) + " cannot be read";
        return;
      }
      hold(entry.body_bytes);
    }
    entry.stored_at = 0;
  };
  for (Level& level : levels_) {
    for (auto& [id, entry] : level.fresh) take_in(id, entry);
    for (auto& [id, entry] : level.returned) take_in(id, entry);
  }
  for (auto& [id, checked_out] : checked_out_) take_in(MessageId{id}, checked_out.entry);
  for (auto& [id, leaving] : leaving_) take_in(MessageId{id}, leaving.entry);
  if (!failure.empty()) return unexpected(failure);

  // Written in one buffer, sized up front: a large queue's snapshot is tens of megabytes.
  const uint64_t expected = ready_count_ + checked_out_.size() + leaving_.size();
  const uint64_t overheads = expected * message_overhead_bytes;
  const uint64_t bodies_in_memory = held_bytes_ > overheads ? held_bytes_ - overheads : 0;
  std::vector<uint8_t> bytes;
  bytes.reserve(64 + consumers_.size() * 32 + expected * 64 + bodies_in_memory);
  amqp::WireWriter out(bytes);
  out.u8(snapshot_format_version);
  out.u64(next_id_);
  out.u64(now_ms_);
  out.u64(round_robin_next_);
  out.u32(static_cast<uint32_t>(consumers_.size()));
  for (const Consumer& c : consumers_) {
    out.u64(c.id.value);
    out.u32(c.options.prefetch_count);
    out.u64(static_cast<uint64_t>(c.options.priority));
    out.u8(static_cast<uint8_t>((c.options.no_ack ? consumer_no_ack : 0) |
                                (c.options.exclusive ? consumer_exclusive : 0) |
                                (c.suspended ? consumer_suspended : 0)));
    out.u32(c.checked_out);
  }
  out.u32(static_cast<uint32_t>(expected));
  uint64_t count = 0;
  auto write = [&](Place place, MessageId id, HolderId holder, const Entry& entry) {
    out.u8(static_cast<uint8_t>(place));
    out.u64(id.value);
    out.u64(holder.value);
    out.u32(entry.delivery_count);
    out.u64(entry.expires_at_ms);
    out.u64(entry.stored_at);
    if (entry.stored_at == 0) {
      encode_message(out, *entry.message);
    } else {
      out.u32(entry.body_bytes);
      out.u8(entry.priority);
    }
    ++count;
  };
  for (const Level& level : levels_) {
    for (const auto& [id, entry] : level.fresh) {
      if (!entry.tombstone) write(Place::fresh, id, {}, entry);
    }
    for (const auto& [id, entry] : level.returned) write(Place::returned, id, {}, entry);
  }
  std::vector<uint64_t> held(checked_out_.size());
  std::transform(checked_out_.begin(), checked_out_.end(), held.begin(),
                 [](const auto& item) { return item.first; });
  std::sort(held.begin(), held.end());  // the same bytes on every replica
  for (uint64_t id : held) {
    const CheckedOut& checked_out = checked_out_.at(id);
    write(Place::checked_out, MessageId{id}, checked_out.holder, checked_out.entry);
  }
  for (const auto& [id, leaving] : leaving_) {
    write(Place::leaving, MessageId{id}, {}, leaving.entry);
    out.u8(static_cast<uint8_t>(leaving.reason));
  }
  HAMQ_VERIFY(count == expected, "a snapshot counted its messages wrong");
  out.u32(static_cast<uint32_t>(proposers_.size()));
  for (const auto& [id, proposer] : proposers_) {
    out.u64(id);
    out.u64(proposer.low);
    out.u32(static_cast<uint32_t>(proposer.above.size()));
    for (uint64_t seq : proposer.above) out.u64(seq);
  }
  out.u32(static_cast<uint32_t>(seen_order_.size()));
  for (const SeenKey& seen : seen_order_) {
    out.long_string(seen.key);
    out.u64(seen.at_ms);
  }
  out.u32(static_cast<uint32_t>(handed_in_.size()));
  for (const auto& [source, handed] : handed_in_) {
    out.u64(source);
    out.u32(static_cast<uint32_t>(handed.order.size()));
    for (uint64_t id : handed.order) out.u64(id);
  }
  return std::string(bytes.begin(), bytes.end());
}

void QueueMachine::clear_state() {
  drop(held_bytes_);
  for (Level& level : levels_) level = Level{};
  checked_out_.clear();
  leaving_.clear();
  consumers_.clear();
  expiries_.clear();
  dead_letters_.clear();
  ready_count_ = 0;
  ready_body_bytes_ = 0;
  round_robin_next_ = 0;
  proposers_.clear();
  seen_order_.clear();
  seen_keys_.clear();
  handed_in_.clear();
}

Result<void, std::string> QueueMachine::restore(std::string_view snapshot) {
  clear_state();
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(snapshot.data()), snapshot.size()});
  auto fail = [this](std::string why) -> Result<void, std::string> {
    clear_state();
    return unexpected("bad queue snapshot: " + why);
  };
  uint8_t version = in.u8();
  if (!in.failed() && version != snapshot_format_version &&
      version != snapshot_format_without_hand_overs &&
      version != snapshot_format_without_proposers &&
      version != snapshot_format_without_references) {
    return fail("unknown format version " + std::to_string(version));
  }
  uint64_t next_id = in.u64();
  uint64_t now = in.u64();
  uint64_t round_robin = in.u64();
  uint32_t consumer_count = in.u32();
  // Each consumer takes 25 bytes: a count beyond what is left is damage, not an allocation.
  if (in.failed() || uint64_t{consumer_count} * 25 > in.remaining()) return fail("truncated");
  std::vector<Consumer> consumers;
  for (uint32_t i = 0; i < consumer_count; ++i) {
    Consumer c;
    c.id.value = in.u64();
    c.options.prefetch_count = in.u32();
    c.options.priority = static_cast<int64_t>(in.u64());
    uint8_t flags = in.u8();
    c.checked_out = in.u32();
    if ((flags & ~(consumer_no_ack | consumer_exclusive | consumer_suspended)) != 0) {
      return fail("bad consumer flags");
    }
    c.options.no_ack = flags & consumer_no_ack;
    c.options.exclusive = flags & consumer_exclusive;
    c.suspended = flags & consumer_suspended;
    for (const Consumer& other : consumers) {
      if (other.id == c.id) return fail("a consumer twice");
    }
    consumers.push_back(c);
  }
  uint32_t entry_count = in.u32();
  if (in.failed()) return fail("truncated");
  std::vector<uint64_t> last_fresh(levels_.size(), 0);
  // A message is in one place only: checked once all are read, on a sorted array (a million
  // messages restore without a million small allocations).
  std::vector<uint64_t> seen;
  seen.reserve(std::min<uint64_t>(entry_count, in.remaining() / 30));
  std::unordered_map<uint64_t, uint32_t> held_by;
  for (uint32_t i = 0; i < entry_count; ++i) {
    auto place = static_cast<Place>(in.u8());
    MessageId id{in.u64()};
    HolderId holder{in.u64()};
    Entry entry;
    entry.delivery_count = in.u32();
    entry.expires_at_ms = in.u64();
    if (version != snapshot_format_without_references) entry.stored_at = in.u64();
    if (in.failed()) return fail("truncated");
    if (entry.stored_at == 0) {
      auto message = decode_message(in);
      if (!message.ok()) return fail(message.error());
      entry.priority = (*message)->properties.priority.value_or(0);
      entry.body_bytes = static_cast<uint32_t>((*message)->body.size());
      entry.message = std::move(*message);
    } else {
      entry.body_bytes = in.u32();  // its body waits in the log
      entry.priority = in.u8();
      if (in.failed()) return fail("truncated");
    }
    if (id.value == 0 || id.value >= next_id) return fail("a message id out of range");
    seen.push_back(id.value);
    hold(size_of(entry));
    switch (place) {
      case Place::fresh: {
        uint8_t level = level_index(entry);
        if (id.value <= last_fresh[level]) return fail("fresh messages out of order");
        last_fresh[level] = id.value;
        ++ready_count_;
        ready_body_bytes_ += entry.body_bytes;
        if (entry.expires_at_ms != never) {
          expiries_.push_back(Expiry{entry.expires_at_ms, id, level});
        }
        levels_[level].fresh.emplace_back(id, std::move(entry));
        break;
      }
      case Place::returned: {
        Level& level = level_of(entry);
        if (entry.expires_at_ms != never) {
          expiries_.push_back(Expiry{entry.expires_at_ms, id, level_index(entry)});
        }
        ++ready_count_;
        ready_body_bytes_ += entry.body_bytes;
        level.returned.emplace(id, std::move(entry));
        break;
      }
      case Place::checked_out:
        ++held_by[holder.value];
        checked_out_.emplace(id.value, CheckedOut{holder, std::move(entry)});
        break;
      case Place::leaving: {
        uint8_t reason = in.u8();
        if (in.failed()) return fail("truncated");
        if (reason > static_cast<uint8_t>(DeadLetterReason::delivery_limit)) {
          return fail("bad reason");
        }
        leaving_.emplace(id.value,
                         Leaving{std::move(entry), static_cast<DeadLetterReason>(reason)});
        break;
      }
      default:
        return fail("bad place");
    }
  }
  std::map<uint64_t, Proposer> proposers;
  if (version >= snapshot_format_without_hand_overs) {
    uint32_t proposer_count = in.u32();
    // Each proposer takes 20 bytes at least.
    if (in.failed() || uint64_t{proposer_count} * 20 > in.remaining()) return fail("truncated");
    for (uint32_t i = 0; i < proposer_count; ++i) {
      uint64_t id = in.u64();
      Proposer proposer;
      proposer.low = in.u64();
      uint32_t seqs = in.u32();
      if (in.failed() || seqs > proposer_seqs_max || uint64_t{seqs} * 8 > in.remaining()) {
        return fail("truncated");
      }
      for (uint32_t j = 0; j < seqs; ++j) {
        uint64_t seq = in.u64();
        // Above the low mark and in order, with a gap right after the mark.
        if (seq <= proposer.low + 1 ||
            (!proposer.above.empty() && seq <= *proposer.above.rbegin())) {
          return fail("bad proposer numbers");
        }
        proposer.above.insert(proposer.above.end(), seq);
      }
      if (!proposers.empty() && id <= proposers.rbegin()->first)
        return fail("proposers out of order");
      proposers.emplace_hint(proposers.end(), id, std::move(proposer));
    }
    uint32_t key_count = in.u32();
    // Each key takes 12 bytes at least.
    if (in.failed() || uint64_t{key_count} * 12 > in.remaining()) return fail("truncated");
    for (uint32_t i = 0; i < key_count; ++i) {
      SeenKey key;
      in.long_string(key.key);
      key.at_ms = in.u64();
      if (in.failed()) return fail("truncated");
      // (In the order the queue took them: their times may go back, as its commands' stamps.)
      if (key.key.empty() || !seen_keys_.emplace(key.key, key.at_ms).second) {
        return fail("bad deduplication keys");
      }
      seen_order_.push_back(std::move(key));
    }
  }
  if (version >= snapshot_format_version) {
    uint32_t source_count = in.u32();
    // Each source takes 12 bytes at least.
    if (in.failed() || uint64_t{source_count} * 12 > in.remaining()) return fail("truncated");
    for (uint32_t i = 0; i < source_count; ++i) {
      uint64_t source = in.u64();
      uint32_t count = in.u32();
      if (in.failed() || count > hand_over_window || uint64_t{count} * 8 > in.remaining()) {
        return fail("truncated");
      }
      if (source == 0 || (!handed_in_.empty() && source <= handed_in_.rbegin()->first)) {
        return fail("hand-over sources out of order");
      }
      HandedIn& handed = handed_in_[source];
      for (uint32_t j = 0; j < count; ++j) {
        uint64_t id = in.u64();
        if (id == 0 || !handed.ids.insert(id).second) return fail("bad hand-overs");
        handed.order.push_back(id);
      }
    }
  }
  if (in.remaining() != 0) return fail("trailing bytes");
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) return fail("a message twice");
  if (round_robin > consumers.size()) return fail("round-robin position out of range");
  for (const Consumer& c : consumers) {
    auto held = held_by.find(c.id.value);
    if (c.checked_out != (held == held_by.end() ? 0 : held->second)) {
      return fail("a consumer's count of the messages it holds is wrong");
    }
  }
  std::make_heap(expiries_.begin(), expiries_.end(), std::greater<>{});
  consumers_ = std::move(consumers);
  proposers_ = std::move(proposers);
  next_id_ = next_id;
  now_ms_ = now;
  round_robin_next_ = round_robin;
  return Ok{};
}

}  // namespace hamq::queue
