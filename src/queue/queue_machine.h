// QueueMachine: one queue's state as a deterministic state machine (the design of RabbitMQ's
// rabbit_fifo). Every change is a command with the time it happened passed in; the same commands
// with the same times give the same state and the same deliveries on every replica, which is what
// lets a Raft group apply it on each member.
//
// Messages are "ready" (waiting), "checked out" (delivered to a holder and not yet settled) or
// gone. A holder is a consumer, or a channel that took messages with basic.get. Deliveries go to
// consumers with room under their prefetch limit, highest consumer priority first, round-robin
// among equals. A returned message goes back to its original place: ahead of every message that
// was published after it.
//
// Thread: owned by one event loop. Not thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/result.h"
#include "queue/message.h"

namespace hamq::queue {

// The queue's own sequence number of a message, in enqueue order.
struct MessageId {
  uint64_t value = 0;
  auto operator<=>(const MessageId&) const = default;
};

// Who holds checked-out messages: a consumer or a channel's basic.get. Assigned by the broker,
// unique in the cluster: the node's id in the high 16 bits (holder_node_shift), then the node's
// life (which start of its process made it: holder_life_shift, 8 bits, counting modulo 256),
// then a counter of that life (40 bits). So a holder of a node's previous life is never taken for
// one of its current life (a restart detaches those of its earlier lives). Holders written into a
// log before node ids existed have node 0.
struct HolderId {
  uint64_t value = 0;
  auto operator<=>(const HolderId&) const = default;
  uint64_t node() const;
  uint64_t life() const;
};
constexpr unsigned holder_node_shift = 48;
constexpr unsigned holder_life_shift = 40;
constexpr uint64_t holder_lives = uint64_t{1} << (holder_node_shift - holder_life_shift);
constexpr uint64_t holder_counter_mask = (uint64_t{1} << holder_life_shift) - 1;
inline uint64_t HolderId::node() const {
  return value >> holder_node_shift;
}
inline uint64_t HolderId::life() const {
  return (value >> holder_life_shift) & (holder_lives - 1);
}
// The id of a node's life as the proposer of queue commands (QueueMachine::admit): the node in
// the high 16 bits, the whole count of its lives below (so ids of a node's lives grow).
inline uint64_t proposer_id_of(uint64_t node, uint64_t life) {
  return node << holder_node_shift | (life & ((uint64_t{1} << holder_node_shift) - 1));
}
// The id of `counter`'s holder (or connection) of `node` in `life`.
inline uint64_t holder_id_of(uint64_t node, uint64_t life, uint64_t counter) {
  return node << holder_node_shift | (life % holder_lives) << holder_life_shift |
         (counter & holder_counter_mask);
}

struct ConsumerOptions {
  uint32_t prefetch_count = 0;  // 0: unlimited
  int64_t priority = 0;
  bool no_ack = false;  // deliveries are settled as they are made
  bool exclusive = false;
  // A limit shared with other consumers (a channel's global prefetch): each delivery takes one,
  // and the owner of the counter gives them back. Not owned; must outlive the consumer.
  uint32_t* shared_credit = nullptr;
};

struct Delivery {
  HolderId holder;
  MessageId id;
  MessagePtr message;  // null when its body is on disk only: read it at `stored_at`
  bool redelivered = false;
  uint32_t delivery_count = 0;  // times handed out before this one
  uint64_t stored_at = 0;       // the log index of its enqueue (0: not in a log)
};

enum class AttachResult { attached, exclusive_conflict, already_attached };

enum class Overflow { drop_head, reject_publish, reject_publish_dlx };

// Why a message left its queue for the dead-letter exchange (the x-death "reason").
enum class DeadLetterReason { rejected, expired, maxlen, delivery_limit };
std::string_view dead_letter_reason_name(DeadLetterReason reason);

struct DeadLetter {
  MessagePtr message;  // null when on disk only, as in Delivery
  DeadLetterReason reason;
  uint64_t stored_at = 0;
  // Set when the queue keeps it as leaving until handed_over() (keep_leaving_messages): 0 else.
  MessageId id;
};

// Fixed at declaration, from the queue's arguments.
struct QueueOptions {
  // x-max-priority: messages are delivered highest priority first (FIFO within one), with
  // priorities above the maximum taken as the maximum. 0: no priorities.
  uint8_t max_priority = 0;
  // x-single-active-consumer: only the earliest attached consumer receives; when it goes, the
  // next in attach order takes over.
  bool single_active_consumer = false;
  // x-max-length and x-max-length-bytes: limits on ready messages (count, body bytes).
  std::optional<uint64_t> max_length = std::nullopt;
  std::optional<uint64_t> max_length_bytes = std::nullopt;
  Overflow overflow = Overflow::drop_head;
  // The queue has a dead-letter exchange: messages it drops for a reason become dead letters
  // (take_dead_letters) instead of vanishing.
  bool dead_letters = false;
  // x-message-ttl: a ready message older than this expires (with a per-message `expiration`,
  // the lower of the two counts). Expiry is on time wherever the message is in the queue.
  std::optional<uint64_t> message_ttl_ms = std::nullopt;
  // x-delivery-limit: a message returned to the queue more than this many times is not put back
  // but becomes a dead letter with reason delivery_limit, whether or not the queue has a
  // dead-letter exchange (the broker parks it when there is none: it is never dropped).
  std::optional<uint32_t> delivery_limit = std::nullopt;
  // x-message-deduplication (a window in ms) and x-message-deduplication-messages (how many ids
  // it holds): a message whose key (its `x-deduplication-header` header, else its message_id)
  // the queue took within the window is dropped (and counts as taken: it is there already).
  // Either one turns deduplication on; the other is then unbounded (time) or
  // dedup_messages_default (ids).
  std::optional<uint64_t> dedup_window_ms = std::nullopt;
  std::optional<uint64_t> dedup_window_messages = std::nullopt;
  bool deduplicates() const { return dedup_window_ms || dedup_window_messages; }
};

constexpr uint64_t dedup_messages_default = 100'000;

// Where a message handed over from another queue comes from (a dead letter, a parked message, a
// delayed message whose time came): its source queue's group and its id there. A target takes
// each once (QueueMachine::took_hand_over): a source's new leader offers again everything still
// leaving, some of which its old leader had handed over already.
struct HandOverKey {
  uint64_t source = 0;
  uint64_t id = 0;
  bool operator==(const HandOverKey&) const = default;
};
// How many hand-overs from one source a target remembers, the latest. One offered again after
// that many more came from its source would be taken twice (never lost).
constexpr size_t hand_over_window = 16'384;

// The key a message is deduplicated by (QueueOptions::dedup_window_ms): empty when it has none.
std::string dedup_key(const Message& message);

// A message's own TTL from its `expiration` property (a decimal count of milliseconds), or
// nothing when it has none or it is not such a number (the channel refuses those).
std::optional<uint64_t> message_expiration_ms(const Message& message);

enum class EnqueueResult { accepted, rejected };

// What a message is counted as in memory besides its body: the message object, its properties
// and the queue's entry, roughly.
constexpr uint64_t message_overhead_bytes = 256;

class QueueMachine {
 public:
  explicit QueueMachine(QueueOptions options = {});
  ~QueueMachine();
  QueueMachine(const QueueMachine&) = delete;
  QueueMachine& operator=(const QueueMachine&) = delete;

  // Puts a message at the tail and delivers what can be delivered.
  // Refused (rejected) only by a full queue with overflow reject-publish(-dlx); a full
  // drop-head queue drops its oldest ready messages instead.
  // `stored_at`: the log index of the command that enqueues it, for a queue on a log (0: none).
  // Such a message's body may leave memory (keep_bodies_of) and is read back from the log by
  // whoever receives a Delivery or DeadLetter without one.
  EnqueueResult enqueue(MessagePtr message, uint64_t now_ms, std::vector<Delivery>& deliveries,
                        uint64_t stored_at = 0);
  // Puts a message that expires after exactly `ttl_ms`, whatever its own expiration and the
  // queue's TTL say: how a delayed exchange holds a message until its time.
  EnqueueResult enqueue_for(MessagePtr message, uint64_t ttl_ms, uint64_t now_ms,
                            std::vector<Delivery>& deliveries, uint64_t stored_at = 0);
  // Bodies of stored messages stay in memory only for the first `count` ready messages (the
  // next to be delivered) and while the ready bodies take at most `bytes` (so a large message
  // waits on disk); the others, and every checked-out one, keep just an index entry.
  // Default: all stay. Changes nothing the queue decides, only its memory.
  void keep_bodies_of(size_t count, uint64_t bytes = UINT64_MAX) {
    body_cache_count_ = count;
    body_cache_bytes_ = bytes;
  }
  // A queue on a log hands a message over to where it goes next (dead-letter targets, a delayed
  // exchange's destinations) through two logs: the message stays here, "leaving" (in the
  // snapshot too), until handed_over() says every target has it. Until then it is nowhere a
  // consumer sees it and counts as no ready or checked-out message. Default: off (a dead letter
  // is gone from the queue once taken).
  void keep_leaving_messages() { keep_leaving_ = true; }
  // Leaving messages that have arrived where they go: gone for good. Unknown ids are ignored.
  void handed_over(const std::vector<MessageId>& ids);
  // Every message still leaving, oldest first, as the dead letters they were (after a restart:
  // their hand-over starts again).
  std::vector<DeadLetter> leaving_messages() const;
  size_t leaving_count() const { return leaving_.size(); }

  AttachResult attach(HolderId consumer, ConsumerOptions options, uint64_t now_ms,
                      std::vector<Delivery>& deliveries);
  // Delivers what can be delivered now: after a consumer's shared credit was given back.
  void deliver_ready(uint64_t now_ms, std::vector<Delivery>& deliveries);

  // Pauses deliveries to a consumer whose connection cannot take more now (its output is
  // backed up), and resumes them.
  void suspend(HolderId consumer);
  void resume(HolderId consumer, uint64_t now_ms, std::vector<Delivery>& deliveries);

  // Stops deliveries to a consumer (basic.cancel); what it holds stays checked out to it and can
  // still be settled or returned.
  void cancel(HolderId consumer);
  // Removes a consumer or get-holder for good (its channel closed); what it held goes back to the
  // queue, marked redelivered. Returns how many messages went back.
  size_t detach(HolderId holder, uint64_t now_ms, std::vector<Delivery>& deliveries);

  // Acknowledged: gone for good. Unknown ids are ignored (the broker checks tags before).
  void settle(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
              std::vector<Delivery>& deliveries);
  // Back to the queue in their original place, marked redelivered.
  void requeue(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
               std::vector<Delivery>& deliveries);
  // Rejected without requeue: gone, or a dead letter (reason rejected).
  void discard(HolderId holder, const std::vector<MessageId>& ids, uint64_t now_ms,
               std::vector<Delivery>& deliveries);

  // basic.get: the next ready message, checked out to `holder` unless no_ack.
  std::optional<Delivery> get(HolderId holder, bool no_ack, uint64_t now_ms);

  // Drops every ready message; returns how many.
  size_t purge();

  // Commands proposed through the log are numbered by their proposer (a node's life:
  // proposer_id_of), one count per queue. A command resent after a leader change may be
  // committed twice, and a copy may land before that of a command numbered before it. admit()
  // takes `floor` first (the proposer settles every number below it and never sends it again),
  // then says `first` for the next number of `proposer` (every one before it admitted or passed),
  // `copy` for one admitted before (or passed by the floor), and `early` for one with a number
  // before it missing: not admitted, its proposer sends it again after the missing ones (as
  // RabbitMQ's quorum queues refuse an enqueue out of sequence). So one proposer's commands run
  // in the order it numbered them. A proposer of a node's new life retires that node's earlier
  // lives. Part of the replicated state (the snapshot keeps it).
  enum class Admission { first, copy, early };
  Admission admit(uint64_t proposer, uint64_t seq, uint64_t floor);
  // What admit() would say, changing nothing.
  Admission admission(uint64_t proposer, uint64_t seq, uint64_t floor) const;
  // True if a copy of `seq` from `proposer` was admitted (or `floor` passed it).
  bool admitted(uint64_t proposer, uint64_t seq) const;
  size_t proposer_count() const { return proposers_.size(); }
  // True if the hand-over `key` was taken (record_hand_over) and is still in its source's window.
  bool took_hand_over(const HandOverKey& key) const;
  // A hand-over taken: the next copy of it is not.
  void record_hand_over(const HandOverKey& key);
  // Messages dropped as duplicates (QueueOptions::dedup_window_ms), and the keys remembered.
  uint64_t deduplicated_count() const { return deduplicated_; }
  size_t dedup_keys() const { return seen_keys_.size(); }

  // Expires the ready messages whose time has come (dead letters with reason `expired`). Every
  // other command expires what is due first too, so an expired message is never delivered.
  void expire(uint64_t now_ms, std::vector<Delivery>& deliveries);
  // When expire() next has something to do (possibly earlier than needed), or nothing when no
  // message has a TTL.
  std::optional<uint64_t> next_expiry_ms() const;

  // The whole state as a Raft snapshot of the queue's group (queue/queue_snapshot.cc). A live
  // message stored at or after `refer_from` in the log is in it as a reference to that entry
  // (the log must keep the entries from `refer_from` on); every other one with its body, which
  // `load` reads back if it left memory (null: it cannot, and neither can the snapshot be made).
  // Once it is made, those are held in memory, as a restored queue holds them: the log they were
  // stored in is about to be released. Leaving messages are in it; dead letters not yet taken,
  // of a queue that keeps none leaving, are not.
  using BodyLoader = std::function<MessagePtr(uint64_t stored_at)>;
  Result<std::string, std::string> snapshot(const BodyLoader& load,
                                            uint64_t refer_from = UINT64_MAX);
  // Where to start referring so that the messages carried with their bodies (the oldest in the
  // log, and those in memory only) come to at most `carried_bytes_max` (bodies and overhead):
  // UINT64_MAX when every live message fits.
  uint64_t reference_cut(uint64_t carried_bytes_max) const;
  // Replaces the state (not the options) with a snapshot's; its messages are in memory again.
  // Never trusts the bytes: an error leaves the queue empty.
  Result<void, std::string> restore(std::string_view snapshot);
  // Forgets the state (not the options): the queue is empty, as a replica never started.
  void clear() { clear_state(); }
  // What the live messages (ready, checked out and leaving) would hold in memory with their
  // bodies: bodies and each message's overhead. Walks the messages not ready.
  uint64_t live_bytes() const;

  size_t ready_count() const { return ready_count_; }
  uint64_t ready_body_bytes() const { return ready_body_bytes_; }
  // Messages that left for the dead-letter exchange since the last call, oldest first.
  std::vector<DeadLetter> take_dead_letters() { return std::exchange(dead_letters_, {}); }
  bool has_dead_letters() const { return !dead_letters_.empty(); }
  // Bytes of the messages this queue holds (ready and checked out), overhead included.
  uint64_t held_bytes() const { return held_bytes_; }
  // A counter the queue adds its held bytes to and takes them from, shared by the queues of a
  // node for its memory watermark. Set before the first enqueue.
  void set_memory_counter(uint64_t* counter) { memory_counter_ = counter; }
  size_t checked_out_count() const { return checked_out_.size(); }
  const QueueOptions& options() const { return options_; }
  size_t consumer_count() const { return consumers_.size(); }
  bool has_exclusive_consumer() const;
  std::vector<HolderId> consumer_ids() const;
  // Every holder the queue knows: its consumers and whoever has messages checked out.
  std::vector<HolderId> holder_ids() const;
  // The messages checked out to any of `holders`, in id order, as they were delivered (a body
  // that left memory is null: read it at stored_at).
  std::vector<Delivery> held_by(const std::set<HolderId>& holders) const;

 private:
  static constexpr uint64_t never = UINT64_MAX;
  struct Entry {
    MessagePtr message;      // null once the body left memory (stored_at finds it)
    uint64_t stored_at = 0;  // the log index of its enqueue; 0: in memory only
    uint64_t expires_at_ms = never;
    uint32_t body_bytes = 0;
    uint32_t delivery_count = 0;
    uint8_t priority = 0;
    bool tombstone = false;  // expired in place (see Level)
  };
  // A message that expires at `at_ms`, if it is still ready then (checked out, settled or
  // expired before: the record is stale and skipped).
  struct Expiry {
    uint64_t at_ms = 0;
    MessageId id;
    uint8_t level = 0;
    bool operator>(const Expiry& other) const { return at_ms > other.at_ms; }
  };
  struct Consumer {
    HolderId id;
    ConsumerOptions options;
    uint32_t checked_out = 0;
    bool suspended = false;
  };
  struct CheckedOut {
    HolderId holder;
    Entry entry;
  };

  // Hands ready messages to consumers while any has room.
  void deliver(std::vector<Delivery>& deliveries);
  Consumer* next_consumer();
  // Takes the first ready message (returned ones come first: they are older).
  std::pair<MessageId, Entry> take_next();
  Consumer* find_consumer(HolderId id);
  // Takes a message checked out to `holder` (nullopt if it is not), counting it off `consumer`.
  std::optional<Entry> take_checked_out(HolderId holder, MessageId id, Consumer* consumer);
  void release(HolderId holder);

  // What an entry holds in memory: its body only while it has it.
  static uint64_t size_of(const Entry& entry) {
    return (entry.message ? entry.body_bytes : 0) + message_overhead_bytes;
  }
  // Lets a stored entry's body go (it is read from the log when needed).
  void evict(Entry& entry);
  Delivery delivery_of(HolderId holder, MessageId id, const Entry& entry) const;
  size_t body_cache_count_ = SIZE_MAX;
  uint64_t body_cache_bytes_ = UINT64_MAX;
  void hold(uint64_t bytes);
  void drop(uint64_t bytes);

  uint64_t next_id_ = 1;
  uint64_t held_bytes_ = 0;
  uint64_t* memory_counter_ = nullptr;
  // Ready messages of one priority: fresh ones in id order, and returned ones, which are all
  // older than the fresh ones and so are taken first. A fresh message that expires in the middle
  // leaves a tombstone (its body is freed at once); tombstones are skipped at the head and swept
  // out when they are half the deque, so they never outnumber the live messages.
  struct Level {
    std::deque<std::pair<MessageId, Entry>> fresh;
    size_t tombstones = 0;
    std::map<MessageId, Entry> returned;
    bool empty() const { return fresh.size() == tombstones && returned.empty(); }
  };
  Level& level_of(const Entry& entry);
  uint8_t level_index(const Entry& entry) const;
  void put_back(MessageId id, Entry entry);
  // A checked-out message comes back: counted, then put back or, past the delivery limit,
  // dead-lettered.
  void return_entry(MessageId id, Entry entry);
  // A message's entry, its bytes counted as held.
  Entry new_entry(MessagePtr message, uint64_t stored_at);
  EnqueueResult add(MessagePtr message, std::optional<uint64_t> ttl_ms, uint64_t now_ms,
                    std::vector<Delivery>& deliveries, uint64_t stored_at);
  // Takes the time a command is stamped with, and expires what is due then. It may be earlier
  // than the last (a new leader's clock behind, a system clock stepped back): each command is
  // taken at its own stamp, so that one stamp far ahead does not hold back every expiry after.
  void advance_time(uint64_t now_ms);
  void expire_due();
  void expire_one(const Expiry& expiry);
  void watch_expiry(MessageId id, const Entry& entry);
  std::vector<Expiry> expiries_;  // a min-heap on at_ms
  uint64_t now_ms_ = 0;

  QueueOptions options_;
  std::vector<Level> levels_;  // index = priority; one level without priorities
  size_t ready_count_ = 0;
  uint64_t ready_body_bytes_ = 0;
  void check_out(HolderId holder, MessageId id, Entry entry);
  void clear_state();
  std::vector<DeadLetter> dead_letters_;
  bool over_limit(uint64_t extra_count, uint64_t extra_bytes) const;
  void remove(MessageId id, Entry entry, std::optional<DeadLetterReason> reason);
  struct Leaving {
    Entry entry;
    DeadLetterReason reason = DeadLetterReason::rejected;
  };
  bool keep_leaving_ = false;
  std::map<uint64_t, Leaving> leaving_;                   // by MessageId value
  std::unordered_map<uint64_t, CheckedOut> checked_out_;  // by MessageId value
  std::vector<Consumer> consumers_;                       // in attach order
  size_t round_robin_next_ = 0;
  // What each proposer's numbers have been admitted: every one up to `low`, and those in
  // `above` (copies that came after a gap, until the gap is filled or the floor passes it).
  struct Proposer {
    uint64_t low = 0;
    std::set<uint64_t> above;
  };
  std::map<uint64_t, Proposer> proposers_;  // by proposer id
  // Deduplication: the keys taken within the window, oldest first, each once (a duplicate does
  // not restart its key's window), and when each was taken.
  struct SeenKey {
    std::string key;
    uint64_t at_ms = 0;
  };
  std::deque<SeenKey> seen_order_;
  std::unordered_map<std::string, uint64_t> seen_keys_;  // key -> at_ms
  uint64_t deduplicated_ = 0;
  // Forgets the keys past the window; true if `key` is still in it.
  bool seen_within_window(const std::string& key);
  // The hand-overs taken, per source (HandOverKey::source): its last hand_over_window ids, oldest
  // first, and the same as a set.
  struct HandedIn {
    std::deque<uint64_t> order;
    std::unordered_set<uint64_t> ids;
  };
  std::map<uint64_t, HandedIn> handed_in_;
};

}  // namespace hamq::queue
