#include "broker/definitions.h"

#include "broker/broker.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace hamq::broker {
namespace {

amqp::FieldTable table(std::string name, amqp::FieldValue value) {
  amqp::FieldTable t;
  t.entries.emplace_back(std::move(name), std::move(value));
  return t;
}

std::vector<MetadataCommand> one_of_each() {
  return {
      DeclareExchange{{"/", "orders", "x-delayed-message", false, true,
                       table("x-delayed-type", amqp::FieldValue("topic")), 17}},
      DeclareExchange{{"/", "plain", "direct", true, false, {}}},
      DeleteExchange{"/", "old"},
      DeclareQueue{{"/", "work", 42, false, table("x-max-length", amqp::FieldValue(int32_t{10}))}},
      DeleteQueue{"/", "gone"},
      Bind{{"/", "orders", Binding{"work", true, "eu.#", {}}}},
      Unbind{
          {"/", "orders", Binding{"audit", false, "", table("x-match", amqp::FieldValue("all"))}}},
  };
}

TEST(Definitions, EveryCommandRoundTrips) {
  for (const MetadataCommand& command : one_of_each()) {
    std::string bytes = encode_metadata_command(command);
    auto decoded = decode_metadata_command(bytes);
    ASSERT_TRUE(decoded.ok()) << decoded.error();
    EXPECT_EQ(encode_metadata_command(*decoded), bytes);
    EXPECT_EQ(decoded->index(), command.index());
  }
}

TEST(Definitions, TruncatedOrDamagedCommandsAreRefused) {
  for (const MetadataCommand& command : one_of_each()) {
    std::string bytes = encode_metadata_command(command);
    for (size_t cut = 0; cut < bytes.size(); ++cut) {
      EXPECT_FALSE(decode_metadata_command(bytes.substr(0, cut)).ok()) << cut;
    }
    EXPECT_FALSE(decode_metadata_command(bytes + "!").ok());
  }
}

TEST(Definitions, DeletingAQueueOrExchangeTakesItsBindingsWithIt) {
  Definitions d;
  d.apply(DeclareExchange{{"/", "x", "topic", false, false, {}}});
  d.apply(DeclareExchange{{"/", "y", "fanout", false, false, {}}});
  d.apply(DeclareQueue{{"/", "q", 1, false, {}}});
  d.apply(Bind{{"/", "x", Binding{"q", true, "a", {}}}});
  d.apply(Bind{{"/", "x", Binding{"y", false, "b", {}}}});
  d.apply(Bind{{"/", "y", Binding{"q", true, "", {}}}});
  d.apply(Bind{{"/", "x", Binding{"q", true, "a", {}}}});  // the same binding again: one
  EXPECT_EQ(d.bindings().size(), 3u);
  d.apply(DeleteQueue{"/", "q"});
  ASSERT_EQ(d.bindings().size(), 1u);
  EXPECT_EQ(d.bindings()[0].binding.destination, "y");
  d.apply(DeleteExchange{"/", "y"});
  EXPECT_TRUE(d.bindings().empty());
  EXPECT_EQ(d.exchanges().size(), 1u);
  EXPECT_TRUE(d.queues().empty());
}

TEST(Definitions, SnapshotRebuildsTheSameDefinitions) {
  Definitions d;
  for (const MetadataCommand& command : one_of_each()) d.apply(command);
  d.apply(DeclareQueue{{"other", "q2", 43, true, {}}});
  auto restored = Definitions::from_snapshot(d.snapshot());
  ASSERT_TRUE(restored.ok()) << restored.error();
  EXPECT_EQ(*restored, d);
  std::string damaged = d.snapshot();
  damaged.pop_back();
  EXPECT_FALSE(Definitions::from_snapshot(damaged).ok());
}

// The fuzzer's seeds: one command of each kind, written to HAMQ_WRITE_METADATA_COMMAND_CORPUS
// when it is set (tools/make_log_entry_corpora.sh).
TEST(Definitions, FuzzSeedsAreOneOfEachKind) {
  std::vector<MetadataCommand> commands = one_of_each();
  // One of each kind, and an exchange declared both with and without a group.
  EXPECT_EQ(commands.size(), std::variant_size_v<MetadataCommand> + 1);
  const char* dir = std::getenv("HAMQ_WRITE_METADATA_COMMAND_CORPUS");
  if (dir == nullptr) return;
  std::filesystem::create_directories(dir);
  for (size_t i = 0; i < commands.size(); ++i) {
    std::ofstream(std::string(dir) + "/kind-" + std::to_string(i), std::ios::binary)
        << encode_metadata_command(commands[i]);
  }
}

// A store that keeps what it is given, replaying it as the metadata group would.
struct RecordingStore : DefinitionStore {
  bool record(const std::vector<MetadataCommand>& commands) override {
    ++calls;
    for (const auto& command : commands) replayed.apply(command);
    return !fail;
  }
  Definitions replayed;
  int calls = 0;
  bool fail = false;
};

TEST(BrokerDefinitions, ChangesToDurableThingsAreRecordedAsTheirDifference) {
  Broker broker({"/"}, 1);
  RecordingStore store;
  broker.set_definition_store(&store);
  VirtualHost& vhost = *broker.find_virtual_host("/");
  ASSERT_TRUE(vhost.declare_exchange({.name = "x", .type = "topic", .durable = true}).ok());
  ASSERT_TRUE(vhost.declare_exchange({.name = "t", .type = "fanout", .durable = false}).ok());
  ASSERT_TRUE(vhost.declare_queue({.name = "q", .durable = true}, 0).ok());
  ASSERT_TRUE(vhost.declare_queue({.name = "mine", .durable = true, .exclusive = true}, 9).ok());
  ASSERT_TRUE(vhost.bind("x", Binding{"q", true, "a.#", {}}, 0).ok());
  ASSERT_TRUE(vhost.bind("t", Binding{"q", true, "", {}}, 0).ok());     // from a transient one
  ASSERT_TRUE(vhost.bind("x", Binding{"mine", true, "", {}}, 9).ok());  // to an exclusive one
  broker.persist_definitions();
  EXPECT_EQ(store.calls, 1);
  EXPECT_EQ(store.replayed, broker.current_definitions());
  EXPECT_EQ(store.replayed.exchanges().size(), 1u);
  EXPECT_EQ(store.replayed.queues().size(), 1u);
  ASSERT_EQ(store.replayed.bindings().size(), 1u);
  broker.persist_definitions();  // nothing changed: nothing recorded
  EXPECT_EQ(store.calls, 1);
  broker.delete_queue(vhost, "q");
  broker.persist_definitions();
  EXPECT_EQ(store.replayed, broker.current_definitions());
  EXPECT_TRUE(store.replayed.queues().empty());
  EXPECT_TRUE(store.replayed.bindings().empty());
}

TEST(BrokerDefinitions, RestoredDefinitionsAreDeclaredAndNotRecordedAgain) {
  Definitions kept;
  kept.apply(DeclareExchange{{"/", "x", "direct", false, false, {}}});
  kept.apply(DeclareQueue{{"/", "q", 0, false, {}}});
  kept.apply(Bind{{"/", "x", Binding{"q", true, "k", {}}}});
  Broker broker({"/"}, 1);
  broker.restore_definitions(kept);
  RecordingStore store;
  broker.set_definition_store(&store);
  broker.persist_definitions();
  EXPECT_EQ(store.calls, 0);
  EXPECT_EQ(broker.current_definitions(), kept);
  auto routed = broker.find_virtual_host("/")->route("x", "k", {}, nullptr);
  ASSERT_EQ(routed.size(), 1u);
  EXPECT_EQ(routed[0]->name, "q");
}

TEST(BrokerDefinitions, AFailedRecordIsCountedAndTriedAgain) {
  Broker broker({"/"}, 1);
  RecordingStore store;
  store.fail = true;
  broker.set_definition_store(&store);
  ASSERT_TRUE(broker.find_virtual_host("/")->declare_queue({.name = "q", .durable = true}, 0).ok());
  broker.persist_definitions();
  EXPECT_EQ(broker.definition_failures(), 1u);
  store.fail = false;
  ASSERT_TRUE(broker.find_virtual_host("/")->declare_queue({.name = "r", .durable = true}, 0).ok());
  broker.persist_definitions();
  EXPECT_EQ(broker.current_definitions().queues().size(), 2u);
  EXPECT_EQ(store.calls, 2);
}

}  // namespace
}  // namespace hamq::broker
