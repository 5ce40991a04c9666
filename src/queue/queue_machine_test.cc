#include "queue/queue_machine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

namespace hamq::queue {
namespace {

MessagePtr message(std::string body) {
  auto m = std::make_shared<Message>();
  m->body = std::move(body);
  return m;
}

std::vector<std::string> bodies(const std::vector<Delivery>& deliveries) {
  std::vector<std::string> out;
  for (const auto& d : deliveries) out.push_back(d.message->body);
  return out;
}

constexpr HolderId alice{1};
constexpr HolderId bob{2};
constexpr HolderId getter{3};

TEST(QueueMachine, DeliversInPublishOrderToOneConsumer) {
  QueueMachine q;
  std::vector<Delivery> out;
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(q.ready_count(), 3u);
  EXPECT_EQ(q.attach(alice, {}, 0, out), AttachResult::attached);
  EXPECT_EQ(bodies(out), (std::vector<std::string>{"1", "2", "3"}));
  EXPECT_EQ(q.ready_count(), 0u);
  EXPECT_EQ(q.checked_out_count(), 3u);
  EXPECT_FALSE(out[0].redelivered);
}

TEST(QueueMachine, StoredMessagesBeyondTheCacheKeepOnlyTheirIndex) {
  QueueMachine q;
  q.keep_bodies_of(1);
  std::vector<Delivery> out;
  for (uint64_t i = 0; i < 3; ++i) q.enqueue(message(std::string(1000, 'a')), 0, out, 10 + i);
  // The first keeps its body (next to go), the others only their place in the log.
  EXPECT_EQ(q.held_bytes(), 1000 + 3 * message_overhead_bytes);
  EXPECT_EQ(q.ready_body_bytes(), 3000u);  // limits still count every body
  q.attach(alice, {}, 0, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_NE(out[0].message, nullptr);
  EXPECT_EQ(out[1].message, nullptr);
  EXPECT_EQ(out[1].stored_at, 11u);
  EXPECT_EQ(out[2].stored_at, 12u);
  // Checked out, none keeps a body; returned, one comes back as an index again.
  EXPECT_EQ(q.held_bytes(), 3 * message_overhead_bytes);
  std::vector<Delivery> again;
  q.detach(alice, 0, again);
  q.attach(bob, {}, 0, again);
  ASSERT_EQ(again.size(), 3u);
  EXPECT_EQ(again[0].message, nullptr);
  EXPECT_EQ(again[0].stored_at, 10u);
  EXPECT_TRUE(again[0].redelivered);
}

TEST(QueueMachine, LargeStoredBodiesWaitOnDiskWhateverTheirCount) {
  QueueMachine q;
  q.keep_bodies_of(256, 1500);
  std::vector<Delivery> out;
  q.enqueue(message(std::string(1000, 'a')), 0, out, 10);
  q.enqueue(message(std::string(1000, 'b')), 0, out, 11);  // 2000 ready bytes: past the bound
  q.enqueue(message(std::string(100, 'c')), 0, out, 12);   // still past it
  EXPECT_EQ(q.held_bytes(), 1000 + 3 * message_overhead_bytes);
  q.attach(alice, {}, 0, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_NE(out[0].message, nullptr);
  EXPECT_EQ(out[1].message, nullptr);
  EXPECT_EQ(out[2].message, nullptr);
  EXPECT_EQ(out[1].stored_at, 11u);
}

TEST(QueueMachine, PrefetchLimitsCheckedOutMessages) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 2}, 0, out);
  for (auto b : {"1", "2", "3", "4"}) q.enqueue(message(b), 0, out);
  EXPECT_EQ(bodies(out), (std::vector<std::string>{"1", "2"}));
  std::vector<Delivery> more;
  q.settle(alice, {out[0].id}, 0, more);
  EXPECT_EQ(bodies(more), (std::vector<std::string>{"3"}));
  EXPECT_EQ(q.ready_count(), 1u);
}

TEST(QueueMachine, RoundRobinAmongEqualConsumers) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.attach(bob, {}, 0, out);
  for (auto b : {"1", "2", "3", "4"}) q.enqueue(message(b), 0, out);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(out[0].holder, alice);
  EXPECT_EQ(out[1].holder, bob);
  EXPECT_EQ(out[2].holder, alice);
  EXPECT_EQ(out[3].holder, bob);
}

TEST(QueueMachine, HigherPriorityConsumerFirstUntilItIsFull) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 2, .priority = 10}, 0, out);
  q.attach(bob, {.priority = 0}, 0, out);
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].holder, alice);
  EXPECT_EQ(out[1].holder, alice);
  EXPECT_EQ(out[2].holder, bob);
}

TEST(QueueMachine, RequeuedMessageReturnsToItsOriginalPosition) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 2}, 0, out);
  for (auto b : {"1", "2", "3", "4"}) q.enqueue(message(b), 0, out);
  ASSERT_EQ(bodies(out), (std::vector<std::string>{"1", "2"}));
  q.detach(alice, 0, out);  // 1 and 2 go back ahead of 3 and 4
  std::vector<Delivery> again;
  q.attach(bob, {}, 0, again);
  EXPECT_EQ(bodies(again), (std::vector<std::string>{"1", "2", "3", "4"}));
  EXPECT_TRUE(again[0].redelivered);
  EXPECT_TRUE(again[1].redelivered);
  EXPECT_FALSE(again[2].redelivered);
  EXPECT_EQ(again[0].delivery_count, 1u);
}

TEST(QueueMachine, RequeueOfOneMessageKeepsOrder) {
  QueueMachine q;
  std::vector<Delivery> out;
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  auto first = q.get(getter, false, 0);
  auto second = q.get(getter, false, 0);
  ASSERT_TRUE(first && second);
  q.requeue(getter, {second->id}, 0, out);
  q.requeue(getter, {first->id}, 0, out);
  std::vector<std::string> order;
  while (auto d = q.get(getter, true, 0)) order.push_back(d->message->body);
  EXPECT_EQ(order, (std::vector<std::string>{"1", "2", "3"}));
}

TEST(QueueMachine, NoAckConsumerIsNeverFull) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 1, .no_ack = true}, 0, out);
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(q.checked_out_count(), 0u);
}

TEST(QueueMachine, ExclusiveConsumerExcludesOthers) {
  QueueMachine q;
  std::vector<Delivery> out;
  EXPECT_EQ(q.attach(alice, {.exclusive = true}, 0, out), AttachResult::attached);
  EXPECT_EQ(q.attach(bob, {}, 0, out), AttachResult::exclusive_conflict);
  q.detach(alice, 0, out);
  EXPECT_EQ(q.attach(bob, {}, 0, out), AttachResult::attached);
  EXPECT_EQ(q.attach(alice, {.exclusive = true}, 0, out), AttachResult::exclusive_conflict);
}

TEST(QueueMachine, CancelledConsumerKeepsWhatItHolds) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.enqueue(message("1"), 0, out);
  q.cancel(alice);
  EXPECT_EQ(q.consumer_count(), 0u);
  q.enqueue(message("2"), 0, out);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(q.checked_out_count(), 1u);
  q.settle(alice, {out[0].id}, 0, out);
  EXPECT_EQ(q.checked_out_count(), 0u);
  EXPECT_EQ(q.ready_count(), 1u);
}

TEST(QueueMachine, DiscardedAndSettledMessagesAreGone) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  for (auto b : {"1", "2"}) q.enqueue(message(b), 0, out);
  q.settle(alice, {out[0].id}, 0, out);
  q.discard(alice, {out[1].id}, 0, out);
  EXPECT_EQ(q.checked_out_count(), 0u);
  EXPECT_EQ(q.ready_count(), 0u);
  q.detach(alice, 0, out);
  EXPECT_EQ(q.ready_count(), 0u);
}

TEST(QueueMachine, SettleByAnotherHolderIsIgnored) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.enqueue(message("1"), 0, out);
  q.settle(bob, {out[0].id}, 0, out);
  EXPECT_EQ(q.checked_out_count(), 1u);
}

// Resent commands: each number is admitted once, and only after every number before it (one
// that comes early is refused: its proposer sends it again after the missing ones); a floor
// settles the numbers below it (given up by the proposer: a late copy is refused).
TEST(QueueMachine, EachProposersNumbersAreAdmittedOnceAndInOrder) {
  using enum QueueMachine::Admission;
  QueueMachine q;
  const uint64_t p = proposer_id_of(4, 1);
  EXPECT_EQ(q.admit(p, 1, 1), first);
  EXPECT_EQ(q.admission(p, 3, 1), early);
  EXPECT_EQ(q.admit(p, 3, 1), early);  // 2 is missing
  EXPECT_FALSE(q.admitted(p, 3));
  EXPECT_EQ(q.admit(p, 1, 1), copy);
  EXPECT_EQ(q.admit(p, 2, 1), first);
  EXPECT_EQ(q.admit(p, 3, 1), first);  // sent again, after 2
  EXPECT_EQ(q.admit(p, 2, 2), copy);
  EXPECT_EQ(q.admit(p, 6, 4), early);  // 4 and 5 not yet
  EXPECT_EQ(q.admission(p, 6, 6), first);
  EXPECT_EQ(q.admit(p, 6, 6), first);  // 4 and 5 given up
  EXPECT_EQ(q.admit(p, 4, 6), copy);
  EXPECT_EQ(q.admit(p, 5, 8), copy);
  EXPECT_EQ(q.admit(p, 8, 8), first);
  EXPECT_TRUE(q.admitted(p, 7));  // passed by the floor
  auto bytes = q.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(bytes.ok());
  QueueMachine restored;
  ASSERT_TRUE(restored.restore(*bytes).ok());
  EXPECT_EQ(restored.admit(p, 8, 8), copy);
  EXPECT_EQ(restored.admit(p, 10, 9), early);
  EXPECT_EQ(restored.admit(p, 9, 9), first);
  // Another node's numbers are its own.
  EXPECT_EQ(q.admit(proposer_id_of(5, 1), 1, 1), first);
  EXPECT_EQ(q.proposer_count(), 2u);
  // A node's new life retires its earlier lives; a late copy of an earlier life retires nothing.
  EXPECT_EQ(q.admit(proposer_id_of(4, 2), 1, 1), first);
  EXPECT_EQ(q.proposer_count(), 2u);
  EXPECT_EQ(q.admit(p, 9, 9), first);
  EXPECT_EQ(q.admit(proposer_id_of(4, 2), 1, 1), copy);
  EXPECT_EQ(q.proposer_count(), 3u);
}

std::shared_ptr<Message> with_id(std::string body, std::optional<std::string> id) {
  auto m = std::make_shared<Message>();
  m->body = std::move(body);
  m->properties.message_id = std::move(id);
  return m;
}

// x-message-deduplication: a message whose id the queue took within the window is dropped (and
// taken: the publisher is confirmed); past the window, or with no id, it goes in.
TEST(QueueMachineDeduplication, AnIdSeenWithinTheWindowIsDropped) {
  QueueMachine q(QueueOptions{.dedup_window_ms = 1000});
  std::vector<Delivery> out;
  EXPECT_EQ(q.enqueue(with_id("first", "m1"), 0, out), EnqueueResult::accepted);
  EXPECT_EQ(q.enqueue(with_id("resent", "m1"), 500, out), EnqueueResult::accepted);
  EXPECT_EQ(q.ready_count(), 1u);
  EXPECT_EQ(q.deduplicated_count(), 1u);
  // The window runs from when the queue took it, not from the duplicate.
  EXPECT_EQ(q.enqueue(with_id("much later", "m1"), 1000, out), EnqueueResult::accepted);
  EXPECT_EQ(q.ready_count(), 2u);
  q.enqueue(with_id("no id", std::nullopt), 1001, out);
  q.enqueue(with_id("no id", std::nullopt), 1002, out);
  EXPECT_EQ(q.ready_count(), 4u);
  // Consumed or not, it was taken: the window still holds it.
  q.attach(alice, {.no_ack = true}, 1003, out);
  q.enqueue(with_id("again", "m1"), 1004, out);
  EXPECT_EQ(q.deduplicated_count(), 2u);
}

// A command stamped earlier than the last (a clock stepped back) keeps what the window holds: it
// is not taken for a time long after.
TEST(QueueMachineDeduplication, AStampEarlierThanTheLastKeepsTheWindow) {
  QueueMachine q(QueueOptions{.dedup_window_ms = 1000});
  std::vector<Delivery> out;
  q.enqueue(with_id("first", "m1"), 5000, out);
  q.enqueue(with_id("resent", "m1"), 100, out);
  EXPECT_EQ(q.ready_count(), 1u);
  EXPECT_EQ(q.deduplicated_count(), 1u);
}

TEST(QueueMachineDeduplication, AWindowOfMessagesHoldsTheLastIds) {
  QueueMachine q(QueueOptions{.dedup_window_messages = 2});
  std::vector<Delivery> out;
  for (const char* id : {"a", "b", "c"}) q.enqueue(with_id(id, id), 0, out);
  EXPECT_EQ(q.dedup_keys(), 2u);
  q.enqueue(with_id("c again", "c"), 0, out);
  EXPECT_EQ(q.ready_count(), 3u);
  q.enqueue(with_id("a again: forgotten", "a"), 0, out);
  EXPECT_EQ(q.ready_count(), 4u);
}

TEST(QueueMachineDeduplication, TheDeduplicationHeaderIsTheKeyWhenThere) {
  QueueMachine q(QueueOptions{.dedup_window_ms = 60'000});
  std::vector<Delivery> out;
  auto keyed = [](std::string key, std::string id) {
    auto m = with_id("body", std::move(id));
    m->properties.headers.emplace();
    m->properties.headers->entries.emplace_back("x-deduplication-header", std::move(key));
    return m;
  };
  q.enqueue(keyed("k", "id-1"), 0, out);
  q.enqueue(keyed("k", "id-2"), 1, out);
  q.enqueue(with_id("body", "k"), 2, out);  // its id is the other's key, not its key
  EXPECT_EQ(q.ready_count(), 1u);
  // A message refused by a full queue was not taken: sent again, it goes in.
  QueueMachine full(QueueOptions{
      .max_length = 1, .overflow = Overflow::reject_publish, .dedup_window_ms = 60'000});
  full.enqueue(with_id("one", "x"), 0, out);
  EXPECT_EQ(full.enqueue(with_id("two", "y"), 0, out), EnqueueResult::rejected);
  full.purge();
  EXPECT_EQ(full.enqueue(with_id("two", "y"), 0, out), EnqueueResult::accepted);
  EXPECT_EQ(full.ready_count(), 1u);
}

TEST(QueueMachine, PurgeDropsReadyOnly) {
  QueueMachine q;
  std::vector<Delivery> out;
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  auto held = q.get(getter, false, 0);
  EXPECT_EQ(q.purge(), 2u);
  EXPECT_EQ(q.checked_out_count(), 1u);
  q.requeue(getter, {held->id}, 0, out);
  EXPECT_EQ(q.ready_count(), 1u);
}

TEST(QueueMachine, HeldBytesFollowMessagesInAndOut) {
  uint64_t node_total = 0;  // outlives the queue, which gives its bytes back when destroyed
  QueueMachine q;
  q.set_memory_counter(&node_total);
  std::vector<Delivery> out;
  for (auto b : {"aaaa", "bb", "c"}) q.enqueue(message(b), 0, out);
  uint64_t all = 7 + 3 * message_overhead_bytes;
  EXPECT_EQ(q.held_bytes(), all);
  EXPECT_EQ(node_total, all);
  auto first = q.get(getter, false, 0);  // checked out: still held
  EXPECT_EQ(q.held_bytes(), all);
  q.settle(getter, {first->id}, 0, out);
  EXPECT_EQ(q.held_bytes(), 3 + 2 * message_overhead_bytes);
  q.get(getter, true, 0);  // no-ack: gone at once
  EXPECT_EQ(q.held_bytes(), 1 + message_overhead_bytes);
  q.purge();
  EXPECT_EQ(q.held_bytes(), 0u);
  EXPECT_EQ(node_total, 0u);
}

TEST(QueueMachine, SuspendedConsumerGetsNothingUntilResumed) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.no_ack = true}, 0, out);
  q.suspend(alice);
  for (auto b : {"1", "2"}) q.enqueue(message(b), 0, out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(q.ready_count(), 2u);
  q.resume(alice, 0, out);
  EXPECT_EQ(bodies(out), (std::vector<std::string>{"1", "2"}));
}

TEST(QueueMachine, SharedCreditLimitsConsumersTogether) {
  QueueMachine q;
  std::vector<Delivery> out;
  uint32_t credit = 3;
  q.attach(alice, {.shared_credit = &credit}, 0, out);
  q.attach(bob, {.shared_credit = &credit}, 0, out);
  for (auto b : {"1", "2", "3", "4", "5"}) q.enqueue(message(b), 0, out);
  EXPECT_EQ(out.size(), 3u);
  EXPECT_EQ(credit, 0u);
  q.settle(out[0].holder, {out[0].id}, 0, out);
  ++credit;  // the owner gives the credit back, then asks for deliveries
  std::vector<Delivery> more;
  q.deliver_ready(0, more);
  EXPECT_EQ(bodies(more), (std::vector<std::string>{"4"}));
}

MessagePtr with_priority(std::string body, uint8_t priority) {
  auto m = std::make_shared<Message>();
  m->body = std::move(body);
  m->properties.priority = priority;
  return m;
}

TEST(QueueMachine, HigherPriorityFirstAndFifoWithinAPriority) {
  QueueMachine q({.max_priority = 5});
  std::vector<Delivery> out;
  q.enqueue(message("none"), 0, out);  // no priority: 0
  q.enqueue(with_priority("p3-a", 3), 0, out);
  q.enqueue(with_priority("p9", 9), 0, out);  // above the maximum: taken as 5
  q.enqueue(with_priority("p3-b", 3), 0, out);
  q.enqueue(with_priority("p5", 5), 0, out);
  std::vector<std::string> order;
  while (auto d = q.get(getter, true, 0)) order.push_back(d->message->body);
  EXPECT_EQ(order, (std::vector<std::string>{"p9", "p5", "p3-a", "p3-b", "none"}));
}

TEST(QueueMachine, RequeuedMessageKeepsItsPlaceWithinItsPriority) {
  QueueMachine q({.max_priority = 2});
  std::vector<Delivery> out;
  q.enqueue(with_priority("low", 0), 0, out);
  q.enqueue(with_priority("high-1", 2), 0, out);
  q.enqueue(with_priority("high-2", 2), 0, out);
  auto first = q.get(getter, false, 0);
  ASSERT_EQ(first->message->body, "high-1");
  q.requeue(getter, {first->id}, 0, out);
  std::vector<std::string> order;
  while (auto d = q.get(getter, true, 0)) order.push_back(d->message->body);
  EXPECT_EQ(order, (std::vector<std::string>{"high-1", "high-2", "low"}));
}

TEST(QueueMachine, WithoutPrioritiesThePropertyIsIgnored) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.enqueue(with_priority("a", 0), 0, out);
  q.enqueue(with_priority("b", 9), 0, out);
  EXPECT_EQ(q.get(getter, true, 0)->message->body, "a");
}

TEST(QueueMachine, SingleActiveConsumerFailsOverInAttachOrder) {
  QueueMachine q({.single_active_consumer = true});
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.attach(bob, {.priority = 10}, 0, out);  // waits despite its priority
  for (auto b : {"1", "2"}) q.enqueue(message(b), 0, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].holder, alice);
  EXPECT_EQ(out[1].holder, alice);
  std::vector<Delivery> after;
  q.detach(alice, 0, after);  // alice's two go back and bob takes over
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].holder, bob);
  EXPECT_EQ(bodies(after), (std::vector<std::string>{"1", "2"}));
  EXPECT_TRUE(after[0].redelivered);
}

std::vector<std::string> dead_bodies(QueueMachine& q, DeadLetterReason reason) {
  std::vector<std::string> out;
  for (const auto& dead : q.take_dead_letters()) {
    EXPECT_EQ(dead.reason, reason);
    out.push_back(dead.message->body);
  }
  return out;
}

TEST(QueueMachine, DropHeadKeepsTheNewestAndDeadLettersTheOldest) {
  QueueMachine q({.max_length = 2, .dead_letters = true});
  std::vector<Delivery> out;
  for (auto b : {"1", "2", "3", "4"}) {
    EXPECT_EQ(q.enqueue(message(b), 0, out), EnqueueResult::accepted);
  }
  EXPECT_EQ(q.ready_count(), 2u);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::maxlen), (std::vector<std::string>{"1", "2"}));
  std::vector<std::string> order;
  while (auto d = q.get(getter, true, 0)) order.push_back(d->message->body);
  EXPECT_EQ(order, (std::vector<std::string>{"3", "4"}));
}

TEST(QueueMachine, MaxLengthCountsReadyMessagesOnly) {
  QueueMachine q({.max_length = 1});
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 2}, 0, out);
  for (auto b : {"1", "2", "3"}) q.enqueue(message(b), 0, out);
  EXPECT_EQ(out.size(), 2u);  // delivered ones do not count
  EXPECT_EQ(q.ready_count(), 1u);
  EXPECT_FALSE(q.has_dead_letters());  // no dead-letter exchange: dropped
}

TEST(QueueMachine, MaxLengthBytesLimitsReadyBodies) {
  QueueMachine q({.max_length_bytes = 10});
  std::vector<Delivery> out;
  for (auto b : {"aaaa", "bbbb", "cccc"}) q.enqueue(message(b), 0, out);
  EXPECT_EQ(q.ready_count(), 2u);
  EXPECT_EQ(q.ready_body_bytes(), 8u);
}

TEST(QueueMachine, RejectPublishRefusesWhenFull) {
  QueueMachine q({.max_length = 1, .overflow = Overflow::reject_publish, .dead_letters = true});
  std::vector<Delivery> out;
  EXPECT_EQ(q.enqueue(message("1"), 0, out), EnqueueResult::accepted);
  EXPECT_EQ(q.enqueue(message("2"), 0, out), EnqueueResult::rejected);
  EXPECT_FALSE(q.has_dead_letters());  // reject-publish never dead-letters
  EXPECT_EQ(q.ready_count(), 1u);
}

TEST(QueueMachine, RejectPublishDlxDeadLettersTheRefusedMessage) {
  QueueMachine q({.max_length = 1, .overflow = Overflow::reject_publish_dlx, .dead_letters = true});
  std::vector<Delivery> out;
  q.enqueue(message("1"), 0, out);
  EXPECT_EQ(q.enqueue(message("2"), 0, out), EnqueueResult::rejected);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::maxlen), (std::vector<std::string>{"2"}));
}

TEST(QueueMachine, DiscardedMessagesBecomeDeadLettersWithADlx) {
  QueueMachine q({.dead_letters = true});
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  for (auto b : {"1", "2"}) q.enqueue(message(b), 0, out);
  q.discard(alice, {out[1].id}, 0, out);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::rejected), (std::vector<std::string>{"2"}));
  EXPECT_EQ(q.checked_out_count(), 1u);
}

TEST(QueueMachine, SameCommandsGiveSameDeliveries) {
  auto run = [] {
    QueueMachine q;
    std::vector<Delivery> out;
    q.attach(alice, {.prefetch_count = 3, .priority = 1}, 0, out);
    q.attach(bob, {.prefetch_count = 5}, 1, out);
    for (int i = 0; i < 20; ++i) q.enqueue(message(std::to_string(i)), 2 + i, out);
    q.requeue(alice, {out[0].id, out[1].id}, 30, out);
    q.detach(bob, 31, out);
    std::vector<std::pair<uint64_t, std::string>> trace;
    for (const auto& d : out) trace.emplace_back(d.holder.value, d.message->body);
    return trace;
  };
  EXPECT_EQ(run(), run());
}

MessagePtr expiring(std::string body, std::string expiration_ms) {
  auto m = std::make_shared<Message>();
  m->body = std::move(body);
  m->properties.expiration = std::move(expiration_ms);
  return m;
}

TEST(QueueMachineTtl, MessageExpiresOnTimeBehindOneThatDoesNot) {
  // Unlike RabbitMQ, expiry does not wait for the message to reach the head (reference §12).
  QueueMachine q({.dead_letters = true});
  std::vector<Delivery> out;
  q.enqueue(message("forever"), 1000, out);
  q.enqueue(expiring("soon", "100"), 1000, out);
  q.enqueue(expiring("later", "500"), 1000, out);
  EXPECT_EQ(q.next_expiry_ms(), std::optional<uint64_t>(1100));
  q.expire(1099, out);
  EXPECT_EQ(q.ready_count(), 3u);
  q.expire(1100, out);
  EXPECT_EQ(q.ready_count(), 2u);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"soon"});
  q.attach(alice, {}, 1200, out);
  EXPECT_EQ(bodies(out), (std::vector<std::string>{"forever", "later"}));
}

// Each command is taken at its own stamp: after one stamped a day ahead (a leader whose clock
// jumped), a message put in at the right time expires after its TTL, not a day later.
TEST(QueueMachineTtl, AStampFarAheadDoesNotHoldBackTheExpiriesAfterIt) {
  constexpr uint64_t day_ms = 86'400'000;
  QueueMachine q({.dead_letters = true, .message_ttl_ms = 300});
  std::vector<Delivery> out;
  q.enqueue(message("stamped a day ahead"), 1000 + day_ms, out);
  q.enqueue(message("stamped right"), 1000, out);
  EXPECT_EQ(q.next_expiry_ms(), std::optional<uint64_t>(1300));
  q.expire(1300, out);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"stamped right"});
  EXPECT_EQ(q.ready_count(), 1u);  // the other expires by its stamp, a day on
}

TEST(QueueMachineTtl, QueueTtlAndMessageTtlTakeTheLower) {
  QueueMachine q({.dead_letters = true, .message_ttl_ms = 300});
  std::vector<Delivery> out;
  q.enqueue(expiring("own 100", "100"), 0, out);
  q.enqueue(expiring("own 900", "900"), 0, out);
  q.enqueue(message("queue's"), 0, out);
  q.expire(100, out);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"own 100"});
  q.expire(300, out);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired),
            (std::vector<std::string>{"own 900", "queue's"}));
  EXPECT_EQ(q.ready_count(), 0u);
  EXPECT_EQ(q.held_bytes(), 0u);
}

TEST(QueueMachineTtl, ZeroTtlIsDeliveredOnlyIfAConsumerTakesItAtOnce) {
  QueueMachine q({.dead_letters = true});
  std::vector<Delivery> out;
  q.enqueue(expiring("nobody there", "0"), 10, out);
  EXPECT_EQ(q.ready_count(), 0u);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"nobody there"});
  q.attach(alice, {}, 10, out);
  q.enqueue(expiring("taken", "0"), 10, out);
  EXPECT_EQ(bodies(out), std::vector<std::string>{"taken"});
}

TEST(QueueMachineTtl, CheckedOutMessageDoesNotExpireUntilItIsReturned) {
  QueueMachine q({.dead_letters = true, .message_ttl_ms = 100});
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.enqueue(message("held"), 0, out);
  ASSERT_EQ(out.size(), 1u);
  q.expire(500, out);
  EXPECT_FALSE(q.has_dead_letters());
  EXPECT_EQ(q.checked_out_count(), 1u);
  // Back in the queue past its time: expired, not delivered again.
  std::vector<Delivery> again;
  q.requeue(alice, {out[0].id}, 600, again);
  EXPECT_TRUE(again.empty());
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"held"});
}

TEST(QueueMachineTtl, ReturnedMessageStillExpiresOnItsOriginalTime) {
  QueueMachine q({.dead_letters = true, .message_ttl_ms = 100});
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 1}, 0, out);
  q.enqueue(message("a"), 0, out);
  q.enqueue(message("b"), 0, out);
  q.cancel(alice);
  std::vector<Delivery> none;
  q.requeue(alice, {out[0].id}, 50, none);
  EXPECT_EQ(q.ready_count(), 2u);
  q.expire(100, none);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), (std::vector<std::string>{"a", "b"}));
}

TEST(QueueMachineTtl, ExpiredMessagesFreeTheirMemoryAtOnce) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.enqueue(message("pinned at the head, no TTL"), 0, out);
  uint64_t one = q.held_bytes();
  for (int i = 0; i < 100'000; ++i) q.enqueue(expiring(std::string(100, 'x'), "1000"), 0, out);
  EXPECT_GT(q.held_bytes(), 100'000u * 100);
  q.expire(1000, out);
  EXPECT_EQ(q.ready_count(), 1u);
  EXPECT_EQ(q.held_bytes(), one);
  EXPECT_EQ(q.next_expiry_ms(), std::nullopt);
  auto head = q.get(getter, true, 1000);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->message->body, "pinned at the head, no TTL");
  EXPECT_FALSE(q.get(getter, true, 1000));
}

TEST(QueueMachineTtl, AnExpiredMessageIsNeverDeliveredEvenBeforeTheTimerRuns) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.enqueue(expiring("stale", "10"), 0, out);
  q.enqueue(message("fresh"), 0, out);
  // No expire() call: the consumer arriving at 20 must not get the stale message.
  q.attach(alice, {}, 20, out);
  EXPECT_EQ(bodies(out), std::vector<std::string>{"fresh"});
  EXPECT_FALSE(q.get(getter, true, 20));
}

TEST(QueueMachineTtl, PrioritiesAndTtlTogether) {
  QueueMachine q({.max_priority = 5, .dead_letters = true});
  std::vector<Delivery> out;
  auto prioritized = [](std::string body, uint8_t priority, std::string ttl) {
    auto m = std::make_shared<Message>();
    m->body = std::move(body);
    m->properties.priority = priority;
    m->properties.expiration = std::move(ttl);
    return m;
  };
  q.enqueue(prioritized("low long", 1, "1000"), 0, out);
  q.enqueue(prioritized("high short", 5, "10"), 0, out);
  q.enqueue(prioritized("high long", 5, "1000"), 0, out);
  q.expire(10, out);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::expired), std::vector<std::string>{"high short"});
  q.attach(alice, {}, 11, out);
  EXPECT_EQ(bodies(out), (std::vector<std::string>{"high long", "low long"}));
}

TEST(QueueMachineTtl, SameCommandsAndTimesGiveSameExpiries) {
  auto run = [] {
    QueueMachine q({.dead_letters = true, .message_ttl_ms = 50});
    std::vector<Delivery> out;
    std::vector<std::string> trace;
    q.attach(alice, {.prefetch_count = 2}, 0, out);
    for (int i = 0; i < 40; ++i) {
      q.enqueue(expiring(std::to_string(i), std::to_string(i % 7 * 10)), i * 3, out);
      if (i % 5 == 0 && !out.empty()) q.settle(alice, {out.back().id}, i * 3, out);
      q.expire(i * 3 + 1, out);
      for (const auto& dead : q.take_dead_letters()) trace.push_back("dead " + dead.message->body);
    }
    for (const auto& d : out) trace.push_back("delivered " + d.message->body);
    return trace;
  };
  EXPECT_EQ(run(), run());
  EXPECT_FALSE(run().empty());
}

TEST(QueueMachineTtl, ExpirationPropertyIsParsedAsMilliseconds) {
  Message m;
  m.properties.expiration = "60000";
  EXPECT_EQ(message_expiration_ms(m), std::optional<uint64_t>(60000));
  m.properties.expiration = "+5";
  EXPECT_EQ(message_expiration_ms(m), std::optional<uint64_t>(5));
  for (const char* bad : {"", "60s", "-1", "1.5", " 1", "+"}) {
    m.properties.expiration = bad;
    EXPECT_EQ(message_expiration_ms(m), std::nullopt) << bad;
  }
  m.properties.expiration.reset();
  EXPECT_EQ(message_expiration_ms(m), std::nullopt);
}

TEST(QueueMachineDeliveryLimit, MessageReturnedTooOftenIsDeadLetteredNotPutBack) {
  QueueMachine q({.dead_letters = true, .delivery_limit = 2});
  std::vector<Delivery> out;
  q.enqueue(message("poison"), 0, out);
  q.attach(alice, {.prefetch_count = 1}, 0, out);
  for (uint32_t returned = 0; returned < 2; ++returned) {
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].delivery_count, returned);
    Delivery d = out[0];
    out.clear();
    q.requeue(alice, {d.id}, 0, out);  // back, and delivered again
  }
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].delivery_count, 2u);
  Delivery last = out[0];
  out.clear();
  q.requeue(alice, {last.id}, 0, out);  // the third return is one too many
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(q.ready_count(), 0u);
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::delivery_limit), std::vector<std::string>{"poison"});
}

TEST(QueueMachineDeliveryLimit, ConsumerLossCountsAsAReturn) {
  QueueMachine q({.delivery_limit = 0});
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.enqueue(message("a"), 0, out);
  q.detach(alice, 0, out);
  // No dead-letter exchange: still a dead letter, for the broker to park; never dropped.
  EXPECT_EQ(dead_bodies(q, DeadLetterReason::delivery_limit), std::vector<std::string>{"a"});
  EXPECT_EQ(q.held_bytes(), 0u);
}

TEST(QueueMachineDeliveryLimit, WithoutALimitMessagesComeBackForever) {
  QueueMachine q;
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 1}, 0, out);
  q.enqueue(message("a"), 0, out);
  for (int i = 0; i < 100; ++i) {
    Delivery d = out.back();
    q.requeue(alice, {d.id}, 0, out);
  }
  EXPECT_EQ(out.back().delivery_count, 100u);
  EXPECT_FALSE(q.has_dead_letters());
}

// A queue on a log keeps each dead letter "leaving" until the broker says its targets have it:
// out of sight of consumers, in memory as an index, and given back by leaving_messages().
TEST(QueueMachineHandOver, ADeadLetterStaysLeavingUntilHandedOver) {
  QueueMachine q({.max_length = 2, .overflow = Overflow::reject_publish_dlx, .dead_letters = true});
  q.keep_bodies_of(0);
  q.keep_leaving_messages();
  std::vector<Delivery> out;
  q.attach(alice, {.prefetch_count = 1}, 0, out);
  q.enqueue(message("rejected"), 0, out, 11);  // to alice
  auto expiring = std::make_shared<Message>();
  expiring->body = "expires";
  expiring->properties.expiration = "100";
  MessagePtr expires = expiring;
  q.enqueue(expires, 0, out, 12);
  q.enqueue(message("held"), 0, out, 13);  // the queue is full
  EXPECT_EQ(q.enqueue(message(std::string(1000, 'x')), 0, out, 14), EnqueueResult::rejected);
  q.expire(150, out);
  ASSERT_EQ(out.size(), 1u);
  q.discard(alice, {out[0].id}, 150, out);  // and "held" goes to alice
  ASSERT_EQ(out.size(), 2u);
  auto dead = q.take_dead_letters();
  ASSERT_EQ(dead.size(), 3u);
  std::vector<uint64_t> ids;
  for (const auto& d : dead) {
    EXPECT_NE(d.id.value, 0u);
    EXPECT_NE(d.stored_at, 0u);  // each carries where its body is
    ids.push_back(d.id.value);
  }
  EXPECT_EQ(dead[0].stored_at, 14u);
  EXPECT_EQ(dead[0].reason, DeadLetterReason::maxlen);
  EXPECT_EQ(dead[1].reason, DeadLetterReason::expired);
  EXPECT_EQ(dead[2].reason, DeadLetterReason::rejected);
  EXPECT_EQ(q.leaving_count(), 3u);
  EXPECT_EQ(q.ready_count(), 0u);
  EXPECT_EQ(q.checked_out_count(), 1u);
  // Bodies on disk only: each leaving message is held as its index.
  EXPECT_EQ(q.held_bytes(), 4 * message_overhead_bytes);
  EXPECT_EQ(q.live_bytes(), 4 * message_overhead_bytes + 1000 + 8 + 7 + 4);

  // A snapshot carries them; the restored queue still has them leaving, with their reasons.
  std::map<uint64_t, MessagePtr> log{{11, message("rejected")},
                                     {12, expires},
                                     {13, message("held")},
                                     {14, message(std::string(1000, 'x'))}};
  auto bytes = q.snapshot([&](uint64_t at) { return log.at(at); });
  ASSERT_TRUE(bytes.ok()) << bytes.error();
  QueueMachine restored;
  ASSERT_TRUE(restored.restore(*bytes).ok());
  auto again = restored.leaving_messages();
  ASSERT_EQ(again.size(), 3u);
  std::vector<uint64_t> ids_again;
  for (const auto& d : again) ids_again.push_back(d.id.value);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids_again, ids);
  EXPECT_EQ(again[0].message->body, "rejected");
  EXPECT_EQ(again[0].reason, DeadLetterReason::rejected);

  q.handed_over({dead[0].id, dead[1].id, MessageId{999}});
  EXPECT_EQ(q.leaving_count(), 1u);
  EXPECT_EQ(q.leaving_messages()[0].id, dead[2].id);
  q.handed_over({dead[2].id});
  EXPECT_EQ(q.leaving_count(), 0u);
  std::vector<Delivery> none;
  q.settle(alice, {out[1].id}, 300, none);
  EXPECT_EQ(q.held_bytes(), 0u);
}

TEST(QueueMachineHandOver, WithoutItADeadLetterIsGoneOnceTaken) {
  QueueMachine q({.dead_letters = true});
  std::vector<Delivery> out;
  q.attach(alice, {}, 0, out);
  q.enqueue(message("a"), 0, out, 5);
  q.discard(alice, {out[0].id}, 0, out);
  auto dead = q.take_dead_letters();
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_EQ(dead[0].id.value, 0u);
  EXPECT_EQ(q.leaving_count(), 0u);
  EXPECT_EQ(q.held_bytes(), 0u);
}

}  // namespace
}  // namespace hamq::queue
