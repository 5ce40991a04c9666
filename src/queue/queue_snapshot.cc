// QueueMachine::snapshot and restore: a queue's whole state as the snapshot of its Raft group.
//
// Layout (integers big-endian, as on the AMQP wire): a format version; the next message id, the
// queue's time and the round-robin position; the consumers (id, prefetch, priority, flags, how
// many they hold); then every live message: where it is (fresh in a level, returned, checked
// out to a holder, or leaving for another queue, followed by why), its id, delivery count, expiry
// time and the message itself (command.h's encoding). Levels, tombstones, the expiry heap and the
// byte counts are rebuilt on restore.
#include <algorithm>
#include <unordered_map>
#include <unordered_set>

#include "amqp/wire.h"
#include "queue/command.h"
#include "queue/queue_machine.h"

namespace hamq::queue {

namespace {

constexpr uint8_t snapshot_format_version = 1;
enum class Place : uint8_t { fresh = 0, returned = 1, checked_out = 2, leaving = 3 };
constexpr uint8_t consumer_no_ack = 1, consumer_exclusive = 2, consumer_suspended = 4;

}  // namespace

Result<std::string, std::string> QueueMachine::snapshot(const BodyLoader& load) {
  // First every live body into memory, so that nothing refers to the log any more.
  std::string failure;
  auto take_in = [&](MessageId id, Entry& entry) {
    if (entry.tombstone || entry.stored_at == 0) return;
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

  std::vector<uint8_t> bytes;
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
  uint32_t count = 0;
  std::vector<uint8_t> entries;
  amqp::WireWriter entry_out(entries);
  auto write = [&](Place place, MessageId id, HolderId holder, const Entry& entry) {
    const Message& message = *entry.message;
    entry_out.u8(static_cast<uint8_t>(place));
    entry_out.u64(id.value);
    entry_out.u64(holder.value);
    entry_out.u32(entry.delivery_count);
    entry_out.u64(entry.expires_at_ms);
    encode_message(entry_out, message);
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
    entry_out.u8(static_cast<uint8_t>(leaving.reason));
  }
  out.u32(count);
  out.bytes(entries);
  return std::string(bytes.begin(), bytes.end());
}

void QueueMachine::clear_state() {
  drop(held_bytes_);
  for (Level& level : levels_) level = Level{};
  checked_out_.clear();
  leaving_.clear();
  leaving_body_bytes_ = 0;
  consumers_.clear();
  expiries_.clear();
  dead_letters_.clear();
  ready_count_ = 0;
  ready_body_bytes_ = 0;
  checked_out_body_bytes_ = 0;
  round_robin_next_ = 0;
}

Result<void, std::string> QueueMachine::restore(std::string_view snapshot) {
  clear_state();
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(snapshot.data()), snapshot.size()});
  auto fail = [this](std::string why) -> Result<void, std::string> {
    clear_state();
    return unexpected("bad queue snapshot: " + why);
  };
  uint8_t version = in.u8();
  if (!in.failed() && version != snapshot_format_version) {
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
  std::unordered_set<uint64_t> seen;  // a message is in one place only
  std::unordered_map<uint64_t, uint32_t> held_by;
  for (uint32_t i = 0; i < entry_count; ++i) {
    auto place = static_cast<Place>(in.u8());
    MessageId id{in.u64()};
    HolderId holder{in.u64()};
    Entry entry;
    entry.delivery_count = in.u32();
    entry.expires_at_ms = in.u64();
    if (in.failed()) return fail("truncated");
    auto message = decode_message(in);
    if (!message.ok()) return fail(message.error());
    if (id.value == 0 || id.value >= next_id) return fail("a message id out of range");
    if (!seen.insert(id.value).second) return fail("a message twice");
    entry.priority = (*message)->properties.priority.value_or(0);
    entry.body_bytes = static_cast<uint32_t>((*message)->body.size());
    entry.message = std::move(*message);
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
        checked_out_body_bytes_ += entry.body_bytes;
        checked_out_.emplace(id.value, CheckedOut{holder, std::move(entry)});
        break;
      case Place::leaving: {
        uint8_t reason = in.u8();
        if (in.failed()) return fail("truncated");
        if (reason > static_cast<uint8_t>(DeadLetterReason::delivery_limit)) {
          return fail("bad reason");
        }
        leaving_body_bytes_ += entry.body_bytes;
        leaving_.emplace(id.value,
                         Leaving{std::move(entry), static_cast<DeadLetterReason>(reason)});
        break;
      }
      default:
        return fail("bad place");
    }
  }
  if (in.remaining() != 0) return fail("trailing bytes");
  if (round_robin > consumers.size()) return fail("round-robin position out of range");
  for (const Consumer& c : consumers) {
    auto held = held_by.find(c.id.value);
    if (c.checked_out != (held == held_by.end() ? 0 : held->second)) {
      return fail("a consumer's count of the messages it holds is wrong");
    }
  }
  std::make_heap(expiries_.begin(), expiries_.end(), std::greater<>{});
  consumers_ = std::move(consumers);
  next_id_ = next_id;
  now_ms_ = now;
  round_robin_next_ = round_robin;
  return Ok{};
}

}  // namespace hamq::queue
