// A queue restored from its snapshot behaves as the queue it was taken from: the same commands
// afterwards give the same deliveries, expiries and dead letters. A damaged snapshot is an error.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "queue/command.h"
#include "queue/queue_machine.h"

namespace hamq::queue {
namespace {

MessagePtr message(std::string body, uint8_t priority = 0) {
  auto m = std::make_shared<Message>();
  m->exchange = "ex";
  m->routing_key = "rk";
  m->body = std::move(body);
  if (priority > 0) m->properties.priority = priority;
  return m;
}

std::string describe(const std::vector<Delivery>& deliveries,
                     const std::map<uint64_t, MessagePtr>& stored) {
  std::string out;
  for (const Delivery& d : deliveries) {
    MessagePtr m = d.message ? d.message : stored.at(d.stored_at);
    out += std::to_string(d.holder.value) + ":" + std::to_string(d.id.value) + ":" + m->body +
           (d.redelivered ? "!" : "") + " ";
  }
  return out;
}

constexpr HolderId alice{1};
constexpr HolderId bob{2};
constexpr HolderId getter{3};

QueueOptions options() {
  return QueueOptions{
      .max_priority = 3, .dead_letters = true, .message_ttl_ms = 60'000, .delivery_limit = 3};
}

TEST(QueueSnapshot, ARestoredQueueGoesOnAsTheOriginal) {
  std::map<uint64_t, MessagePtr> stored;  // the log: bodies by index
  QueueMachine original(options());
  original.keep_bodies_of(2);
  std::vector<Delivery> out;
  uint64_t index = 100;
  auto enqueue = [&](QueueMachine& q, std::string body, uint8_t priority, uint64_t now) {
    MessagePtr m = message(std::move(body), priority);
    stored[++index] = m;
    q.enqueue(m, now, out, index);
  };
  for (int i = 0; i < 10; ++i) enqueue(original, "m" + std::to_string(i), i % 4, 1000 + i);
  original.attach(alice, {.prefetch_count = 3}, 2000, out);
  original.attach(bob, {.prefetch_count = 2, .priority = 5}, 2000, out);
  ASSERT_EQ(out.size(), 5u);
  std::vector<Delivery> more;
  original.requeue(bob, {out[0].id}, 2100, more);  // returned, redelivered
  original.settle(alice, {out[2].id}, 2100, more);
  out.clear();
  more.clear();
  (void)original.take_dead_letters();
  auto load = [&](uint64_t at) { return stored.count(at) ? stored.at(at) : nullptr; };
  auto bytes = original.snapshot(load);
  ASSERT_TRUE(bytes.ok()) << bytes.error();

  QueueMachine copy(options());
  copy.keep_bodies_of(2);
  ASSERT_TRUE(copy.restore(*bytes).ok());
  EXPECT_EQ(copy.ready_count(), original.ready_count());
  EXPECT_EQ(copy.checked_out_count(), original.checked_out_count());
  EXPECT_EQ(copy.ready_body_bytes(), original.ready_body_bytes());
  EXPECT_EQ(copy.consumer_ids(), original.consumer_ids());
  // Snapshots of the two are the same bytes.
  auto again = copy.snapshot(load);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *bytes);

  // The same commands from here on: the same outcome.
  auto run = [&](QueueMachine& q) {
    std::vector<Delivery> got;
    MessagePtr late = message("late", 1);
    stored[500] = late;
    q.enqueue(late, 3000, got, 500);
    q.detach(bob, 3100, got);  // what bob held comes back, redelivered
    q.attach(getter, {}, 3200, got);
    q.expire(70'000, got);
    if (auto d = q.get(alice, false, 70'001)) got.push_back(*d);
    return describe(got, stored) + "| dead letters " +
           std::to_string(q.take_dead_letters().size()) + ", ready " +
           std::to_string(q.ready_count());
  };
  std::string expected = run(original);
  EXPECT_NE(expected.find("late"), std::string::npos) << expected;
  EXPECT_NE(expected.find("!"), std::string::npos) << expected;
  EXPECT_EQ(run(copy), expected);
}

TEST(QueueSnapshot, ADamagedSnapshotIsAnErrorAndLeavesTheQueueEmpty) {
  QueueMachine q;
  std::vector<Delivery> out;
  for (int i = 0; i < 3; ++i) q.enqueue(message("body" + std::to_string(i)), 0, out);
  q.attach(alice, {.prefetch_count = 1}, 0, out);
  auto bytes = q.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(bytes.ok());
  for (size_t cut = 0; cut < bytes->size(); ++cut) {
    QueueMachine damaged;
    EXPECT_FALSE(damaged.restore(std::string_view(*bytes).substr(0, cut)).ok()) << cut;
    EXPECT_EQ(damaged.ready_count(), 0u);
    EXPECT_EQ(damaged.held_bytes(), 0u);
  }
  std::string trailing = *bytes + "x";
  QueueMachine damaged;
  EXPECT_FALSE(damaged.restore(trailing).ok());
}

// A queue too large to carry whole: its oldest messages go with their bodies, up to the bound,
// and the others as references to the log entries that hold them; restored, those are read back
// from the log as a queue's bodies on disk are.
TEST(QueueSnapshot, MessagesPastTheCutAreReferencesToTheLog) {
  std::map<uint64_t, MessagePtr> stored;
  QueueMachine q(options());
  q.keep_bodies_of(1);
  std::vector<Delivery> out;
  for (uint64_t i = 0; i < 10; ++i) {
    stored[101 + i] = message(std::string(1000, 'a' + static_cast<char>(i)));
    q.enqueue(stored[101 + i], 10, out, 101 + i);
  }
  q.attach(alice, {.prefetch_count = 1}, 20, out);  // alice holds message 1 (stored at 101)
  const uint64_t each = 1000 + message_overhead_bytes;
  EXPECT_EQ(q.reference_cut(10 * each), UINT64_MAX);  // all fit
  uint64_t cut = q.reference_cut(3 * each);
  EXPECT_EQ(cut, 104u);  // 101, 102 and 103 are carried
  std::vector<uint64_t> loaded;
  auto bytes = q.snapshot(
      [&](uint64_t at) {
        loaded.push_back(at);
        return stored.at(at);
      },
      cut);
  ASSERT_TRUE(bytes.ok()) << bytes.error();
  EXPECT_EQ(loaded, (std::vector<uint64_t>{102, 103, 101}));  // 104 on are not read
  EXPECT_LT(bytes->size(), 3 * 1000 + 7 * 100 + 200);

  QueueMachine restored(options());
  ASSERT_TRUE(restored.restore(*bytes).ok());
  EXPECT_EQ(restored.ready_count(), 9u);
  EXPECT_EQ(restored.ready_body_bytes(), 9000u);  // limits count the bodies in the log too
  EXPECT_EQ(restored.held_bytes(), 3 * 1000 + 10 * message_overhead_bytes);
  out.clear();
  restored.attach(bob, {}, 30, out);
  ASSERT_EQ(out.size(), 9u);
  EXPECT_NE(out[0].message, nullptr);  // stored at 102: carried
  EXPECT_EQ(out[2].message, nullptr);  // stored at 104: in the log
  EXPECT_EQ(out[2].stored_at, 104u);
  EXPECT_EQ(stored.at(out[8].stored_at)->body, std::string(1000, 'j'));
  // The same snapshot again: stable, and nothing more is read.
  auto again = restored.snapshot([](uint64_t) -> MessagePtr { return nullptr; }, 104);
  ASSERT_TRUE(again.ok());
}

// Found by the fuzzer: bytes that decode but describe a queue that cannot be (a message in two
// places, a consumer whose count of held messages is not what it holds) are damage too.
TEST(QueueSnapshot, AnInconsistentSnapshotIsAnError) {
  QueueMachine q;
  std::vector<Delivery> out;
  for (int i = 0; i < 3; ++i) q.enqueue(message("body" + std::to_string(i)), 0, out);
  q.attach(alice, {.prefetch_count = 1}, 0, out);  // alice holds message 1
  auto bytes = q.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(QueueMachine().restore(*bytes).ok());

  const std::string held_by_alice =
      std::string("\x02") + std::string(7, '\0') + "\x01" + std::string(7, '\0') + "\x01";
  size_t at = bytes->find(held_by_alice);
  ASSERT_NE(at, std::string::npos);
  std::string twice = *bytes;
  twice[at + 8] = '\x02';  // the message alice holds is now message 2, which is also ready
  QueueMachine damaged;
  auto restored = damaged.restore(twice);
  ASSERT_FALSE(restored.ok());
  EXPECT_NE(restored.error().find("a message twice"), std::string::npos) << restored.error();
  EXPECT_EQ(damaged.ready_count(), 0u);

  constexpr size_t alice_count_at = 1 + 8 + 8 + 8 + 4 + 8 + 4 + 8 + 1;
  std::string miscounted = *bytes;
  ASSERT_EQ(miscounted[alice_count_at + 3], '\x01');
  miscounted[alice_count_at + 3] = '\x00';
  restored = damaged.restore(miscounted);
  ASSERT_FALSE(restored.ok());
  EXPECT_NE(restored.error().find("count"), std::string::npos) << restored.error();
}

// Which numbered commands were admitted is replicated state: a member restored from a snapshot
// refuses the copies its leader refused.
TEST(QueueSnapshot, WhatWasAdmittedFromEachProposerIsKept) {
  QueueMachine q;
  using enum QueueMachine::Admission;
  const uint64_t first_id = proposer_id_of(1, 1), second = proposer_id_of(2, 7);
  for (uint64_t seq : {1, 2, 3}) ASSERT_EQ(q.admit(first_id, seq, 1), first);
  ASSERT_EQ(q.admit(second, 5, 5), first);  // 1 to 4 given up
  ASSERT_EQ(q.admit(second, 7, 6), early);  // 6 not yet
  auto bytes = q.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(bytes.ok());
  QueueMachine restored;
  ASSERT_TRUE(restored.restore(*bytes).ok());
  EXPECT_EQ(restored.proposer_count(), 2u);
  EXPECT_TRUE(restored.admitted(first_id, 3));
  EXPECT_EQ(restored.admit(first_id, 2, 1), copy);
  EXPECT_EQ(restored.admit(first_id, 4, 1), first);
  EXPECT_TRUE(restored.admitted(second, 5));
  EXPECT_FALSE(restored.admitted(second, 6));
  EXPECT_EQ(restored.admit(second, 5, 4), copy);
  EXPECT_EQ(restored.admit(second, 7, 6), early);
  EXPECT_EQ(restored.admit(second, 6, 6), first);
  // The deduplication window too.
  QueueMachine deduplicating(QueueOptions{.dedup_window_ms = 1000});
  std::vector<Delivery> out;
  auto with_id = [](std::string id) {
    auto m = std::make_shared<Message>();
    m->body = "body";
    m->properties.message_id = std::move(id);
    return m;
  };
  deduplicating.enqueue(with_id("a"), 100, out);
  deduplicating.enqueue(with_id("b"), 200, out);
  deduplicating.enqueue(with_id("c"), 150, out);  // a leader whose clock is behind stamped it
  auto window = deduplicating.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(window.ok());
  QueueMachine replica(QueueOptions{.dedup_window_ms = 1000});
  ASSERT_TRUE(replica.restore(*window).ok());
  EXPECT_EQ(replica.dedup_keys(), 3u);
  replica.enqueue(with_id("b"), 300, out);
  EXPECT_EQ(replica.deduplicated_count(), 1u);
  EXPECT_EQ(replica.ready_count(), 3u);
  replica.enqueue(with_id("a"), 1100, out);  // a's window is over
  EXPECT_EQ(replica.ready_count(), 4u);
  // And the hand-overs taken from each source.
  QueueMachine target;
  target.record_hand_over(HandOverKey{5, 10});
  target.record_hand_over(HandOverKey{5, 3});
  target.record_hand_over(HandOverKey{2, 10});
  auto taken = target.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(taken.ok());
  QueueMachine member;
  ASSERT_TRUE(member.restore(*taken).ok());
  EXPECT_TRUE(member.took_hand_over(HandOverKey{5, 10}));
  EXPECT_TRUE(member.took_hand_over(HandOverKey{5, 3}));
  EXPECT_TRUE(member.took_hand_over(HandOverKey{2, 10}));
  EXPECT_FALSE(member.took_hand_over(HandOverKey{2, 3}));
  auto again = member.snapshot([](uint64_t) { return nullptr; });
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *taken);
  // A node's new life retires its earlier ones.
  EXPECT_EQ(restored.admit(proposer_id_of(2, 8), 1, 1), first);
  EXPECT_FALSE(restored.admitted(second, 7));
  EXPECT_EQ(restored.proposer_count(), 2u);
}

TEST(QueueSnapshot, ABodyThatCannotBeReadFailsTheSnapshot) {
  QueueMachine q;
  q.keep_bodies_of(0);
  std::vector<Delivery> out;
  q.enqueue(message("gone"), 0, out, 7);
  EXPECT_FALSE(q.snapshot([](uint64_t) { return nullptr; }).ok());
}

// The fuzzer's seeds: snapshots of a queue at a few points of a run;
// HAMQ_WRITE_QUEUE_SNAPSHOT_CORPUS names the directory to write them to
// (tools/make_log_entry_corpora.sh).
TEST(QueueSnapshot, FuzzSeedsAreSnapshotsOfARun) {
  QueueMachine q(options());
  q.keep_leaving_messages();
  std::vector<Delivery> out;
  std::vector<std::string> seeds;
  auto no_log = [](uint64_t) -> MessagePtr { return nullptr; };
  seeds.push_back(*q.snapshot(no_log));
  for (int i = 0; i < 6; ++i) q.enqueue(message("s" + std::to_string(i), i % 4), 10, out);
  seeds.push_back(*q.snapshot(no_log));
  q.attach(alice, {.prefetch_count = 2}, 20, out);
  q.attach(bob, {.priority = 1, .no_ack = false, .exclusive = false}, 20, out);
  q.suspend(bob);
  q.requeue(alice, {out[0].id}, 30, out);
  seeds.push_back(*q.snapshot(no_log));
  q.discard(alice, {out[1].id}, 40, out);  // leaving for the dead-letter exchange
  ASSERT_EQ(q.leaving_count(), 1u);
  seeds.push_back(*q.snapshot(no_log));
  for (uint64_t at = 500; at < 503; ++at) q.enqueue(message("stored", 2), 50, out, at);
  seeds.push_back(*q.snapshot(no_log, 501));  // two of them as references to the log
  ASSERT_EQ(q.admit(proposer_id_of(1, 1), 1, 1), QueueMachine::Admission::first);
  ASSERT_EQ(q.admit(proposer_id_of(2, 4), 3, 3), QueueMachine::Admission::first);  // 1, 2 given up
  seeds.push_back(*q.snapshot(no_log));
  QueueMachine deduplicating(QueueOptions{.dedup_window_ms = 60'000});
  for (const char* id : {"order-1", "order-2"}) {
    auto m = std::make_shared<Message>();
    m->body = "with an id";
    m->properties.message_id = id;
    deduplicating.enqueue(m, 70, out);
  }
  seeds.push_back(*deduplicating.snapshot(no_log));
  EXPECT_EQ(seeds.size(), 7u);
  const char* dir = std::getenv("HAMQ_WRITE_QUEUE_SNAPSHOT_CORPUS");
  if (dir == nullptr) return;
  std::filesystem::create_directories(dir);
  for (size_t i = 0; i < seeds.size(); ++i) {
    std::ofstream(std::string(dir) + "/snapshot-" + std::to_string(i), std::ios::binary)
        << seeds[i];
  }
}

}  // namespace
}  // namespace hamq::queue
