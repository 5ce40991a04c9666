#include "queue/command.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

namespace hamq::queue {
namespace {

MessagePtr sample_message(std::string body) {
  auto m = std::make_shared<Message>();
  m->exchange = "orders";
  m->routing_key = "eu.new";
  m->properties.content_type = "application/json";
  m->properties.delivery_mode = 2;
  m->properties.expiration = "60000";
  m->properties.headers.emplace();
  m->properties.headers->entries.emplace_back("x-attempt", int32_t{3});
  m->body = std::move(body);
  return m;
}

std::vector<QueueCommand> one_of_each() {
  return {
      {1000, EnqueueCommand{sample_message("hello"), std::nullopt}},
      {1001, EnqueueCommand{sample_message(std::string(70'000, 'b')), 250}},
      {1002, AttachCommand{HolderId{7}, 10, -3, false, true}},
      {1003, CancelCommand{HolderId{7}}},
      {1004, DetachCommand{HolderId{8}}},
      {1005, SettleCommand{SettleKind::requeue, HolderId{7}, {MessageId{1}, MessageId{9}}}},
      {1006, GetCommand{HolderId{9}, true}},
      {1007, PurgeCommand{}},
      {1008, ExpireCommand{}},
      {1009, SuspendCommand{HolderId{7}, false}},
      {1010, HandedOverCommand{{MessageId{4}, MessageId{5}}}},
      {1011, EnqueueCommand{sample_message("dead"), std::nullopt, HandOverKey{42, 7}}},
  };
}

TEST(QueueCommand, EveryKindRoundTrips) {
  for (const QueueCommand& command : one_of_each()) {
    std::string bytes = encode_command(command);
    auto decoded = decode_command(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error();
    EXPECT_EQ(decoded->time_ms, command.time_ms);
    ASSERT_EQ(decoded->body.index(), command.body.index());
    EXPECT_EQ(encode_command(*decoded), bytes);
    if (const auto* enqueue = std::get_if<EnqueueCommand>(&decoded->body)) {
      const auto& original = std::get<EnqueueCommand>(command.body);
      EXPECT_EQ(enqueue->message->body, original.message->body);
      EXPECT_EQ(enqueue->message->properties, original.message->properties);
      EXPECT_EQ(enqueue->message->routing_key, "eu.new");
      EXPECT_EQ(enqueue->ttl_ms, original.ttl_ms);
      EXPECT_EQ(enqueue->from, original.from);
    }
  }
}

TEST(QueueCommand, TruncatedOrDamagedEntriesAreRefusedNotTrusted) {
  for (const QueueCommand& command : one_of_each()) {
    std::string bytes = encode_command(command);
    for (size_t cut = 0; cut < bytes.size(); cut += (bytes.size() > 1000 ? 97 : 1)) {
      EXPECT_FALSE(decode_command(bytes.substr(0, cut)).ok()) << cut;
    }
    EXPECT_FALSE(decode_command(bytes + "x").ok());
  }
  EXPECT_FALSE(decode_command(std::string("\x04", 1) + std::string(40, '\0')).ok());  // version
  std::string unknown_kind = encode_command({5, PurgeCommand{}});
  unknown_kind.back() = 42;
  EXPECT_FALSE(decode_command(unknown_kind).ok());
}

// The replicated queue's promise: the same commands give the same state on every replica. A
// random workload applied directly and through the log encoding gives the same effects.
TEST(QueueCommand, ReplicasApplyingTheSameLogDecideAlike) {
  std::mt19937_64 random(7);
  QueueOptions options{.max_priority = 3,
                       .max_length = 50,
                       .dead_letters = true,
                       .message_ttl_ms = 400,
                       .delivery_limit = 2};
  QueueMachine direct(options);
  QueueMachine replica(options);
  std::vector<std::string> direct_trace;
  std::vector<std::string> replica_trace;
  auto record = [](std::vector<std::string>& trace, QueueMachine& machine,
                   const CommandEffects& effects) {
    for (const Delivery& d : effects.deliveries) {
      trace.push_back("deliver " + std::to_string(d.holder.value) + " " + d.message->body + " " +
                      std::to_string(d.delivery_count));
    }
    if (effects.got) trace.push_back("got " + effects.got->message->body);
    for (const auto& dead : machine.take_dead_letters()) {
      trace.push_back("dead " + dead.message->body + " " +
                      std::string(dead_letter_reason_name(dead.reason)));
    }
  };
  std::vector<MessageId> delivered;
  uint64_t now = 0;
  for (int step = 0; step < 3000; ++step) {
    now += random() % 20;
    QueueCommand command{now, ExpireCommand{}};
    switch (random() % 7) {
      case 0:
      case 1: {
        auto m = std::make_shared<Message>();
        m->body = "m" + std::to_string(step);
        m->properties.priority = static_cast<uint8_t>(random() % 4);
        if (random() % 3 == 0) m->properties.expiration = std::to_string(random() % 300);
        command.body = EnqueueCommand{m, std::nullopt};
        break;
      }
      case 2:
        command.body = AttachCommand{HolderId{1 + random() % 3},
                                     static_cast<uint32_t>(random() % 4), 0, false, false};
        break;
      case 3:
        if (!delivered.empty()) {
          MessageId id = delivered[random() % delivered.size()];
          command.body = SettleCommand{
              static_cast<SettleKind>(random() % 3), HolderId{1 + random() % 3}, {id}};
        }
        break;
      case 4:
        command.body = DetachCommand{HolderId{1 + random() % 3}};
        break;
      case 5:
        command.body = GetCommand{HolderId{10}, random() % 2 == 0};
        break;
      default:
        break;
    }
    CommandEffects a = apply_command(direct, command);
    auto decoded = decode_command(encode_command(command));
    ASSERT_TRUE(decoded.ok());
    CommandEffects b = apply_command(replica, *decoded);
    for (const Delivery& d : a.deliveries) delivered.push_back(d.id);
    record(direct_trace, direct, a);
    record(replica_trace, replica, b);
  }
  EXPECT_EQ(direct_trace, replica_trace);
  EXPECT_GT(direct_trace.size(), 1000u);
  EXPECT_EQ(direct.ready_count(), replica.ready_count());
  EXPECT_EQ(direct.checked_out_count(), replica.checked_out_count());
}

TEST(QueueCommand, TheOriginTravelsWithTheCommandAndIsReadWithoutDecodingIt) {
  QueueCommand command{1000, EnqueueCommand{sample_message("hello"), std::nullopt},
                       CommandOrigin{proposer_id_of(3, 2), 41, 37}};
  std::string bytes = encode_command(command);
  auto decoded = decode_command(bytes);
  ASSERT_TRUE(decoded.ok()) << decoded.error();
  EXPECT_EQ(decoded->origin, command.origin);
  EXPECT_EQ(command_origin(bytes), command.origin);
  EXPECT_FALSE(command_origin(bytes.substr(0, 20)).has_value());
  EXPECT_FALSE(command_origin("").has_value());
}

// Entries written before commands were numbered (format 1: no origin) still apply, unnumbered.
TEST(QueueCommand, AnEntryOfTheFirstFormatStillDecodes) {
  std::string purge("\x01\x00\x00\x00\x00\x00\x00\x03\xe8\x07", 10);
  auto decoded = decode_command(purge);
  ASSERT_TRUE(decoded.ok()) << decoded.error();
  EXPECT_EQ(decoded->time_ms, 1000u);
  EXPECT_TRUE(std::holds_alternative<PurgeCommand>(decoded->body));
  EXPECT_EQ(command_origin(purge), CommandOrigin{});
  EXPECT_EQ(command_time(purge), 1000u);
  ASSERT_TRUE(restamp_command(purge, 2000));
  EXPECT_EQ(decode_command(purge)->time_ms, 2000u);
}

// A source's new leader offers again what is still leaving it, which its old leader may have
// handed over already: the target takes each hand-over once (not a duplicate without the
// redelivered flag), but one it refused is taken when offered again.
TEST(QueueCommand, AHandOverOfferedAgainIsTakenOnce) {
  QueueMachine machine(QueueOptions{.max_length = 2, .overflow = Overflow::reject_publish});
  auto offer = [&](uint64_t source, uint64_t id, uint64_t seq) {
    QueueCommand enqueue{
        1000 + seq, EnqueueCommand{sample_message("dead"), std::nullopt, HandOverKey{source, id}},
        CommandOrigin{proposer_id_of(seq, 1), 1, 1}};
    return *apply_command(machine, enqueue).enqueued;
  };
  EXPECT_EQ(offer(7, 3, 1), EnqueueResult::accepted);
  EXPECT_EQ(offer(7, 3, 2), EnqueueResult::accepted);  // by the source's next leader
  EXPECT_EQ(machine.ready_count(), 1u);
  EXPECT_EQ(offer(8, 3, 3), EnqueueResult::accepted);  // the same id from another source
  EXPECT_EQ(machine.ready_count(), 2u);
  EXPECT_EQ(offer(7, 4, 4), EnqueueResult::rejected);  // full
  EXPECT_FALSE(machine.took_hand_over(HandOverKey{7, 4}));
  machine.purge();
  EXPECT_EQ(offer(7, 4, 5), EnqueueResult::accepted);
  EXPECT_EQ(machine.ready_count(), 1u);
  // A source's window holds its latest hand-overs: the oldest goes first.
  for (uint64_t id = 100; id < 100 + hand_over_window; ++id) {
    machine.record_hand_over(HandOverKey{9, id});
  }
  EXPECT_TRUE(machine.took_hand_over(HandOverKey{9, 100}));
  machine.record_hand_over(HandOverKey{9, 1});
  EXPECT_FALSE(machine.took_hand_over(HandOverKey{9, 100}));
  EXPECT_TRUE(machine.took_hand_over(HandOverKey{9, 101}));
  EXPECT_TRUE(machine.took_hand_over(HandOverKey{7, 3}));
}

// A command committed twice (resent after its leader changed) is applied once: a publish is not
// duplicated, a basic.get takes one message.
TEST(QueueCommand, ACopyOfANumberedCommandDoesNothing) {
  QueueMachine machine(QueueOptions{});
  const uint64_t proposer = proposer_id_of(2, 1);
  QueueCommand publish{1000, EnqueueCommand{sample_message("a"), std::nullopt},
                       CommandOrigin{proposer, 1, 1}};
  EXPECT_FALSE(apply_command(machine, publish).duplicate);
  EXPECT_TRUE(apply_command(machine, publish).duplicate);
  EXPECT_EQ(machine.ready_count(), 1u);
  publish.origin.seq = 2;
  apply_command(machine, publish);
  QueueCommand get{1001, GetCommand{HolderId{holder_id_of(2, 1, 5)}, true},
                   CommandOrigin{proposer, 3, 3}};
  EXPECT_TRUE(apply_command(machine, get).got.has_value());
  CommandEffects again = apply_command(machine, get);
  EXPECT_TRUE(again.duplicate);
  EXPECT_FALSE(again.got.has_value());
  EXPECT_EQ(machine.ready_count(), 1u);
  // Unnumbered commands (entries of the first format) always apply.
  QueueCommand old{1002, EnqueueCommand{sample_message("b"), std::nullopt}};
  apply_command(machine, old);
  apply_command(machine, old);
  EXPECT_EQ(machine.ready_count(), 3u);
}

TEST(QueueCommand, ALeaderRestampsAForwardedCommandAndNothingElse) {
  for (const QueueCommand& command : one_of_each()) {
    std::string encoded = encode_command(command);
    ASSERT_TRUE(restamp_command(encoded, 1'234'567'890'123));
    auto decoded = decode_command(encoded);
    ASSERT_TRUE(decoded.ok()) << decoded.error();
    EXPECT_EQ(decoded->time_ms, 1'234'567'890'123u);
    QueueCommand restamped = command;
    restamped.time_ms = 1'234'567'890'123;
    EXPECT_EQ(encode_command(*decoded), encode_command(restamped));
  }
  std::string short_bytes = "\x01\x00";
  EXPECT_FALSE(restamp_command(short_bytes, 5));
  EXPECT_EQ(short_bytes, "\x01\x00");
}

// The fuzzer's seeds are one command of each kind; HAMQ_WRITE_QUEUE_COMMAND_CORPUS names the
// directory to write them to (tools/make_log_entry_corpora.sh).
RelayedEffects sample_relayed() {
  RelayedEffects relayed;
  relayed.number = 17;
  relayed.seq = 42;
  relayed.ready = 7;
  relayed.consumers = 2;
  relayed.applied = 99;
  relayed.effects.enqueued = EnqueueResult::rejected;
  relayed.effects.attached = AttachResult::exclusive_conflict;
  relayed.effects.count = 3;
  relayed.effects.duplicate = true;
  relayed.effects.got = Delivery{HolderId{9}, MessageId{5}, sample_message("got"), true, 2, 0};
  relayed.effects.deliveries.push_back(
      Delivery{HolderId{10}, MessageId{6}, sample_message("one"), false, 0, 0});
  relayed.effects.deliveries.push_back(
      Delivery{HolderId{11}, MessageId{8}, sample_message(std::string(5'000, 'x')), true, 1, 0});
  relayed.cancelled = {HolderId{12}, HolderId{13}};
  return relayed;
}

void expect_same_delivery(const Delivery& a, const Delivery& b) {
  EXPECT_EQ(a.holder, b.holder);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.redelivered, b.redelivered);
  EXPECT_EQ(a.delivery_count, b.delivery_count);
  ASSERT_TRUE(a.message && b.message);
  EXPECT_EQ(a.message->body, b.message->body);
  EXPECT_EQ(a.message->routing_key, b.message->routing_key);
  EXPECT_EQ(a.message->properties.content_type, b.message->properties.content_type);
}

TEST(QueueCommand, WhatAMemberRelaysRoundTripsAndDamageIsRefused) {
  RelayedEffects relayed = sample_relayed();
  std::string encoded = encode_relayed(relayed);
  auto decoded = decode_relayed(encoded);
  ASSERT_TRUE(decoded.ok()) << decoded.error();
  EXPECT_EQ(decoded->number, 17u);
  EXPECT_EQ(decoded->seq, 42u);
  EXPECT_EQ(decoded->ready, 7u);
  EXPECT_EQ(decoded->consumers, 2u);
  EXPECT_EQ(decoded->applied, 99u);
  EXPECT_EQ(decoded->effects.enqueued, EnqueueResult::rejected);
  EXPECT_EQ(decoded->effects.attached, AttachResult::exclusive_conflict);
  EXPECT_EQ(decoded->effects.count, 3u);
  EXPECT_TRUE(decoded->effects.duplicate);
  ASSERT_TRUE(decoded->effects.got.has_value());
  expect_same_delivery(*decoded->effects.got, *relayed.effects.got);
  ASSERT_EQ(decoded->effects.deliveries.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    expect_same_delivery(decoded->effects.deliveries[i], relayed.effects.deliveries[i]);
  }
  EXPECT_EQ(decoded->cancelled, relayed.cancelled);
  EXPECT_EQ(encode_relayed(*decoded), encoded);
  // Nothing set: only the counts and the number travel.
  auto empty = decode_relayed(encode_relayed(RelayedEffects{}));
  ASSERT_TRUE(empty.ok());
  EXPECT_FALSE(empty->effects.got || empty->effects.enqueued || empty->effects.attached);
  EXPECT_TRUE(empty->effects.deliveries.empty() && empty->cancelled.empty());

  // Every cut short, a foreign version, a bad flag, trailing bytes: refused.
  for (size_t size = 0; size < encoded.size(); ++size) {
    EXPECT_FALSE(decode_relayed(encoded.substr(0, size)).ok()) << "cut at " << size;
  }
  std::string foreign = encoded;
  foreign[0] = 9;
  EXPECT_FALSE(decode_relayed(foreign).ok());
  std::string flagged = encoded;
  flagged[1 + 40] = 2;  // duplicate: 0 or 1
  EXPECT_FALSE(decode_relayed(flagged).ok());
  EXPECT_FALSE(decode_relayed(encoded + "x").ok());
}

TEST(QueueCommand, FuzzSeedsAreOneOfEachKind) {
  std::vector<QueueCommand> commands = one_of_each();
  // Three enqueues: plain, with a TTL, handed over.
  EXPECT_EQ(commands.size(), std::variant_size_v<decltype(QueueCommand::body)> + 2);
  const char* dir = std::getenv("HAMQ_WRITE_QUEUE_COMMAND_CORPUS");
  if (dir == nullptr) return;
  std::filesystem::create_directories(dir);
  for (size_t i = 0; i < commands.size(); ++i) {
    std::ofstream(std::string(dir) + "/kind-" + std::to_string(i), std::ios::binary)
        << encode_command(commands[i]);
  }
  std::ofstream(std::string(dir) + "/relayed-0", std::ios::binary)
      << encode_relayed(sample_relayed());
}

}  // namespace
}  // namespace hamq::queue
