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
      DeclareExchange{{"/",
                       "orders",
                       "x-delayed-message",
                       false,
                       true,
                       table("x-delayed-type", amqp::FieldValue("topic")),
                       17,
                       true,
                       2,
                       {2, 1, 3}}},
      DeclareExchange{{"/", "plain", "direct", true, false, {}, 0, false, 3}},
      DeleteExchange{"/", "old", true},
      DeclareQueue{{"/",
                    "work",
                    42,
                    false,
                    table("x-max-length", amqp::FieldValue(int32_t{10})),
                    false,
                    uint64_t{3} << 40 | 5,
                    3,
                    {1, 3, 4}},
                   uint64_t{3} << 40 | 5},
      DeleteQueue{"/", "gone"},
      Barrier{},
      Bind{{"/", "orders", Binding{"work", true, "eu.#", {}}}, uint64_t{3} << 40 | 5},
      Unbind{
          {"/", "orders", Binding{"audit", false, "", table("x-match", amqp::FieldValue("all"))}}},
      AddNode{ClusterNode{4, "n4", "127.0.0.14", 25672, false}},
      ForgetNode{"n2"},
      SetQueueMembers{"/", "work", {3, 4, 5}, {1, 3, 4}},
      SetNodeIncarnation{4, 1796659164805000},
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

TEST(Definitions, AQueuesMembersAreNodeIdsEachOnce) {
  for (const std::vector<uint64_t>& members :
       {std::vector<uint64_t>{1, 0}, std::vector<uint64_t>{2, 3, 2}}) {
    std::string bytes =
        encode_metadata_command(DeclareQueue{{"/", "q", 7, false, {}, true, 0, 1, members}, 0});
    EXPECT_FALSE(decode_metadata_command(bytes).ok());
  }
}

// A delayed exchange written before its group had members (version 3) has it on its home node;
// its members are node ids, each once, as a queue's.
TEST(Definitions, ADelayedExchangesGroupWithoutMembersIsOnItsHomeNode) {
  ExchangeDefinition exchange{"/", "later", "x-delayed-message", false, false, {}, 17, true, 2};
  std::string bytes = encode_metadata_command(DeclareExchange{exchange});
  ASSERT_EQ(bytes.back(), '\0');  // no members
  std::string version3 = "\x03" + bytes.substr(1, bytes.size() - 2);
  auto decoded = decode_metadata_command(version3);
  ASSERT_TRUE(decoded.ok()) << decoded.error();
  EXPECT_EQ(std::get<DeclareExchange>(*decoded).exchange.members, (std::vector<uint64_t>{2}));
  // A proposed declare had no group yet: its home node alone founded it.
  exchange.group = 0;
  bytes = encode_metadata_command(DeclareExchange{exchange});
  decoded = decode_metadata_command("\x03" + bytes.substr(1, bytes.size() - 2));
  ASSERT_TRUE(decoded.ok()) << decoded.error();
  EXPECT_EQ(std::get<DeclareExchange>(*decoded).exchange.members, (std::vector<uint64_t>{2}));
  exchange.members = {2, 3, 2};
  EXPECT_FALSE(decode_metadata_command(encode_metadata_command(DeclareExchange{exchange})).ok());
}

TEST(Definitions, NewMembersAreNodeIdsEachOnceAndAtLeastOne) {
  for (const std::vector<uint64_t>& members :
       {std::vector<uint64_t>{}, std::vector<uint64_t>{4, 0}, std::vector<uint64_t>{2, 3, 2}}) {
    std::string bytes = encode_metadata_command(SetQueueMembers{"/", "q", members, {1}});
    EXPECT_FALSE(decode_metadata_command(bytes).ok());
  }
  Definitions definitions;
  definitions.apply(DeclareQueue{{"/", "q", 7, false, {}, true, 0, 1, {1, 2, 3}}, 0});
  definitions.apply(SetQueueMembers{"/", "q", {2, 3, 4}, {1, 2, 3}});
  definitions.apply(SetQueueMembers{"/", "absent", {1}, {}});  // changes nothing
  EXPECT_EQ(definitions.queues().at({"/", "q"}).members, (std::vector<uint64_t>{2, 3, 4}));
  EXPECT_EQ(definitions.queues().size(), 1u);
}

TEST(Definitions, ANodesIncarnationIsNeverLoweredAndTravelsInSnapshots) {
  Definitions definitions;
  definitions.apply(AddNode{ClusterNode{2, "n2", "127.0.0.12", 25672, false}});
  definitions.apply(SetNodeIncarnation{2, 500});
  definitions.apply(SetNodeIncarnation{2, 400});  // an older record: kept at 500
  definitions.apply(SetNodeIncarnation{9, 700});  // no such node: nothing
  // A node's address corrected (an add node without the incarnation) keeps it.
  definitions.apply(AddNode{ClusterNode{2, "n2", "127.0.0.22", 25672, false}});
  EXPECT_EQ(definitions.nodes().at(2).incarnation, 500u);
  EXPECT_EQ(definitions.nodes().at(2).host, "127.0.0.22");
  EXPECT_FALSE(definitions.nodes().contains(9));
  auto restored = Definitions::from_snapshot(definitions.snapshot());
  ASSERT_TRUE(restored.ok()) << restored.error();
  EXPECT_EQ(restored->nodes().at(2).incarnation, 500u);
  EXPECT_FALSE(decode_metadata_command(encode_metadata_command(SetNodeIncarnation{0, 5})).ok());
}

TEST(Definitions, AVersion1EntryReadsAsDurableWithNoOwner) {
  // A declare and a bind as version 1 wrote them (fuzz/corpus/metadata_command_fuzzer/v1-*).
  auto bytes = [](std::string_view hex) {
    std::string out;
    for (size_t i = 0; i + 1 < hex.size(); i += 2) {
      out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    }
    return out;
  };
  auto declare = decode_metadata_command(
      bytes("0103000000012f00000004776f726b000000000000002a00000000120c782d6d61782d6c656e6774684900"
            "00000a"));
  ASSERT_TRUE(declare.ok()) << declare.error();
  const auto& queue = std::get<DeclareQueue>(*declare);
  EXPECT_EQ(queue.queue.name, "work");
  EXPECT_EQ(queue.queue.group, 42u);
  EXPECT_TRUE(queue.queue.durable);
  EXPECT_EQ(queue.queue.exclusive_owner, 0u);
  EXPECT_EQ(queue.queue.home, 0u);
  auto bind = decode_metadata_command(
      bytes("0105000000012f000000066f726465727300000004776f726b010000000465752e2300000000"));
  ASSERT_TRUE(bind.ok()) << bind.error();
  EXPECT_EQ(std::get<Bind>(*bind).binding.binding.key, "eu.#");
  EXPECT_EQ(std::get<Bind>(*bind).requester, 0u);
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
  d.apply(DeclareQueue{{"/", "q", 1, false, {}, true, 0, 0, {}}});
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
  d.apply(DeclareQueue{{"other", "q2", 43, true, {}, true, 0, 0, {}}});
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

// The metadata group as a list: proposals are appended; commit() applies the entries in order to
// every broker given (the nodes of a cluster), as each node's log would.
struct ManualMetadataLog : DefinitionStore {
  void propose(const MetadataCommand& command, Placed placed) override {
    if (refuse) return placed(std::nullopt);
    entries.push_back({LogPosition{term, entries.size() + 1}, encode_metadata_command(command)});
    placed(entries.back().first);
  }
  // Applies the entries not yet applied to each broker; returns the verdicts (of the first).
  std::vector<bool> commit(const std::vector<Broker*>& brokers) {
    std::vector<bool> verdicts;
    for (; applied < entries.size(); ++applied) {
      auto command = decode_metadata_command(entries[applied].second);
      EXPECT_TRUE(command.ok());
      bool first = true;
      for (Broker* broker : brokers) {
        bool ok = broker->apply_definition(*command, entries[applied].first).ok();
        if (first) verdicts.push_back(ok);
        first = false;
      }
    }
    return verdicts;
  }
  std::vector<std::pair<LogPosition, std::string>> entries;
  size_t applied = 0;
  uint64_t term = 1;
  bool refuse = false;
};

QueueDefinition queue_definition(std::string name, bool durable, uint64_t owner = 0,
                                 uint64_t home = 0) {
  return QueueDefinition{"/", std::move(name), 0, false, {}, durable, owner, home, {}};
}

// A change placed by a leader that lost its place before the change committed: the next
// leader's first entry (empty) lands before the change's index. Nothing later may come for a
// long while (an idle metadata group): the change is answered, lost, right then, not when the
// log reaches its index.
TEST(BrokerDefinitions, AChangeLostWithItsLeaderIsAnsweredByTheNextLeadersFirstEntry) {
  Broker broker({"/"}, 1);
  ManualMetadataLog log;
  broker.set_definition_store(&log);
  log.entries.push_back({LogPosition{1, 1}, ""});  // the first leader's entry
  broker.definition_entry_passed({1, 1});
  log.applied = 1;
  std::optional<std::string> failure;
  broker.change_definitions(DeclareQueue{queue_definition("q", true), 7},
                            [&](const Broker::DefinitionResult& result) {
                              failure = result.ok() ? "" : result.error().text;
                            });
  ASSERT_EQ(log.entries.back().first, (LogPosition{1, 2}));
  EXPECT_FALSE(failure.has_value());
  broker.definition_entry_passed({2, 2});  // another leader's first entry, at the same index
  ASSERT_TRUE(failure.has_value());
  EXPECT_EQ(*failure, "the change was lost in a change of metadata leader");
  // And one placed past the new leader's entry, in the old term, too (it can never commit).
  failure.reset();
  log.term = 2;
  log.entries.resize(4);
  broker.change_definitions(DeclareQueue{queue_definition("r", true), 7},
                            [&](const Broker::DefinitionResult& result) {
                              failure = result.ok() ? "" : result.error().text;
                            });
  ASSERT_EQ(log.entries.back().first, (LogPosition{2, 5}));
  EXPECT_FALSE(failure.has_value());
  broker.definition_entry_passed({3, 3});
  EXPECT_TRUE(failure.has_value());
}

TEST(BrokerDefinitions, AChangeIsMadeWhenItsEntryIsAppliedNotWhenProposed) {
  Broker broker({"/"}, 1);
  ManualMetadataLog log;
  broker.set_definition_store(&log);
  std::optional<bool> verdict;
  broker.change_definitions(DeclareQueue{queue_definition("q", true), 7},
                            [&](const Broker::DefinitionResult& result) { verdict = result.ok(); });
  EXPECT_EQ(broker.find_virtual_host("/")->find_queue("q"), nullptr);
  EXPECT_FALSE(verdict.has_value());
  EXPECT_EQ(broker.pending_definition_count(), 1u);
  log.commit({&broker});
  EXPECT_NE(broker.find_virtual_host("/")->find_queue("q"), nullptr);
  EXPECT_EQ(verdict, true);
  EXPECT_EQ(broker.pending_definition_count(), 0u);
}

TEST(BrokerDefinitions, TwoNodesDeclaringOneNameDifferentlyGetOneWinnerOnBoth) {
  Broker a({"/"}, 1);
  Broker b({"/"}, 2);
  a.set_node_id(1);
  b.set_node_id(2);
  ManualMetadataLog log;
  a.set_definition_store(&log);
  b.set_definition_store(&log);
  std::optional<Broker::DefinitionResult> from_a;
  std::optional<Broker::DefinitionResult> from_b;
  // Both proposed before either is applied: each node saw no queue of that name.
  a.change_definitions(DeclareQueue{queue_definition("q", true), 1 << 20},
                       [&](const Broker::DefinitionResult& r) { from_a = r; });
  b.change_definitions(DeclareQueue{queue_definition("q", false, 0, 2), 2 << 20},
                       [&](const Broker::DefinitionResult& r) { from_b = r; });
  EXPECT_EQ(log.commit({&a, &b}), (std::vector<bool>{true, false}));
  ASSERT_TRUE(from_a && from_b);
  EXPECT_TRUE(from_a->ok());
  ASSERT_FALSE(from_b->ok());
  EXPECT_EQ(from_b->error().code, amqp::ReplyCode::precondition_failed);
  EXPECT_NE(from_b->error().text.find("inequivalent arg 'durable'"), std::string::npos);
  EXPECT_EQ(a.current_definitions(), b.current_definitions());
  EXPECT_TRUE(a.find_virtual_host("/")->find_queue("q")->durable);
}

TEST(BrokerDefinitions, AProposalWhoseIndexAnotherLeaderTookIsNotMade) {
  Broker broker({"/"}, 1);
  ManualMetadataLog log;
  broker.set_definition_store(&log);
  std::optional<Broker::DefinitionResult> verdict;
  broker.change_definitions(DeclareQueue{queue_definition("mine", true), 1},
                            [&](const Broker::DefinitionResult& r) { verdict = r; });
  // A new leader's entry took index 1: it declares another queue.
  log.entries[0] = {LogPosition{2, 1},
                    encode_metadata_command(DeclareQueue{queue_definition("theirs", true), 9})};
  log.commit({&broker});
  ASSERT_TRUE(verdict.has_value());
  EXPECT_FALSE(verdict->ok());
  EXPECT_EQ(broker.find_virtual_host("/")->find_queue("mine"), nullptr);
  EXPECT_NE(broker.find_virtual_host("/")->find_queue("theirs"), nullptr);
}

TEST(BrokerDefinitions, ExclusiveQueuesAreTheOwnersAlsoInTheLog) {
  Broker broker({"/"}, 1);
  ManualMetadataLog log;
  broker.set_definition_store(&log);
  broker.change_definitions(DeclareQueue{queue_definition("mine", true, 5, 1), 5});
  broker.change_definitions(Bind{{"/", "amq.direct", Binding{"mine", true, "k", {}}}, 6});
  broker.change_definitions(Bind{{"/", "amq.direct", Binding{"mine", true, "k", {}}}, 5});
  EXPECT_EQ(log.commit({&broker}), (std::vector<bool>{true, false, true}));
  QueuePtr mine = broker.find_virtual_host("/")->find_queue("mine");
  ASSERT_NE(mine, nullptr);
  EXPECT_EQ(mine->exclusive_owner, 5u);
  EXPECT_FALSE(mine->durable);  // exclusive queues never are
}

TEST(BrokerDefinitions, TheSnapshotRestoresTheSameModel) {
  Broker broker({"/"}, 1);
  broker.set_node_id(3);
  ASSERT_TRUE(
      broker
          .apply_definition(DeclareExchange{{"/", "x", "topic", false, false, {}, 0, true}}, {1, 1})
          .ok());
  ASSERT_TRUE(broker
                  .apply_definition(
                      DeclareExchange{{"/", "t", "fanout", true, false, {}, 0, false, 3}}, {1, 2})
                  .ok());
  ASSERT_TRUE(broker.apply_definition(DeclareQueue{queue_definition("q", true)}, {1, 3}).ok());
  ASSERT_TRUE(
      broker.apply_definition(DeclareQueue{queue_definition("mine", false, 9, 3), 9}, {1, 4}).ok());
  ASSERT_TRUE(
      broker.apply_definition(Bind{{"/", "x", Binding{"q", true, "a.#", {}}}, 0}, {1, 5}).ok());
  ASSERT_TRUE(
      broker.apply_definition(Bind{{"/", "t", Binding{"mine", true, "", {}}}, 9}, {1, 6}).ok());
  ASSERT_TRUE(
      broker.apply_definition(Bind{{"/", "x", Binding{"t", false, "#", {}}}, 0}, {1, 7}).ok());
  Definitions model = broker.current_definitions();
  EXPECT_EQ(model.exchanges().size(), 2u);
  EXPECT_EQ(model.queues().size(), 2u);
  EXPECT_EQ(model.bindings().size(), 3u);
  Broker restored({"/"}, 2);
  auto done = restored.restore_definitions(model.snapshot());
  ASSERT_TRUE(done.ok()) << done.error();
  EXPECT_EQ(restored.current_definitions(), model);
  auto routed = restored.find_virtual_host("/")->route("x", "a.b", {}, nullptr);
  ASSERT_EQ(routed.size(), 2u);
  // The transient things of node 3 go when it restarts; those of other nodes stay.
  restored.set_node_id(4);
  EXPECT_EQ(restored.drop_transient_definitions(), 0u);
  restored.set_node_id(3);
  EXPECT_EQ(restored.drop_transient_definitions(), 2u);
  EXPECT_EQ(restored.current_definitions().exchanges().size(), 1u);
  EXPECT_EQ(restored.current_definitions().queues().size(), 1u);
  EXPECT_EQ(restored.current_definitions().bindings().size(), 1u);
}

TEST(BrokerDefinitions, NodesJoinWithIdsNeverGivenTwiceAndAForgottenNodesQueuesGo) {
  Broker a({"/"}, 1);
  Broker b({"/"}, 2);
  b.set_node_id(2);
  ManualMetadataLog log;
  a.set_definition_store(&log);
  size_t changes = 0;
  a.set_nodes_listener([&] { ++changes; });
  std::vector<uint64_t> ids;
  auto join = [&](std::string name) {
    a.change_definitions(
        AddNode{ClusterNode{0, std::move(name), "127.0.0.1", 25672, false}},
        [&](const Broker::DefinitionResult& result) { ids.push_back(result.ok() ? *result : 0); });
  };
  join("n1");
  join("n2");
  join("n2");  // the same node asking again (its answer was lost): the same id
  a.change_definitions(AddNode{ClusterNode{0, "n2", "127.0.0.99", 25672, false}},
                       [&](const Broker::DefinitionResult& result) {
                         ids.push_back(result.ok() ? *result : 0);
                       });  // another node under a member's name: refused
  log.commit({&a, &b});
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 2, 0}));
  EXPECT_EQ(changes, 2u);
  // n2's own queues, transient and durable, live there only: they go when it is forgotten.
  a.change_definitions(DeclareQueue{queue_definition("on-n2", true, 0, 2)});
  a.change_definitions(DeclareQueue{queue_definition("on-n1", true, 0, 1)});
  // Exchanges are metadata only: a durable one declared through n2 stays, a transient one goes.
  a.change_definitions(DeclareExchange{{"/", "durable-x", "topic", false, false, {}, 0, true, 2}});
  a.change_definitions(
      DeclareExchange{{"/", "transient-x", "topic", false, false, {}, 0, false, 2}});
  a.change_definitions(ForgetNode{"n2"});
  a.change_definitions(ForgetNode{"n2"});  // gone already: refused, nothing changes
  log.commit({&a, &b});
  for (Broker* broker : {&a, &b}) {
    EXPECT_EQ(broker->find_virtual_host("/")->find_queue("on-n2"), nullptr);
    EXPECT_NE(broker->find_virtual_host("/")->find_queue("on-n1"), nullptr);
    EXPECT_NE(broker->find_virtual_host("/")->find_exchange("durable-x"), nullptr);
    EXPECT_EQ(broker->find_virtual_host("/")->find_exchange("transient-x"), nullptr);
    EXPECT_TRUE(broker->cluster_nodes().at(2).forgotten);
  }
  // A node that joins later never gets a forgotten node's id, even under the same name.
  ids.clear();
  join("n2");
  log.commit({&a, &b});
  EXPECT_EQ(ids, (std::vector<uint64_t>{3}));
  EXPECT_EQ(a.cluster_nodes(), b.cluster_nodes());
  // The nodes are part of the snapshot.
  Broker restored({"/"}, 3);
  ASSERT_TRUE(restored.restore_definitions(a.current_definitions().snapshot()).ok());
  EXPECT_EQ(restored.cluster_nodes(), a.cluster_nodes());
  EXPECT_EQ(restored.current_definitions(), a.current_definitions());
}

TEST(BrokerDefinitions, ASnapshotGivenToARunningMemberReplacesWhatDiffers) {
  Broker leader({"/"}, 1);
  Broker behind({"/"}, 2);
  for (Broker* broker : {&leader, &behind}) {
    ASSERT_TRUE(
        broker->apply_definition(DeclareQueue{queue_definition("kept", true)}, {1, 1}).ok());
    ASSERT_TRUE(
        broker->apply_definition(DeclareQueue{queue_definition("gone", true)}, {1, 2}).ok());
    ASSERT_TRUE(
        broker->apply_definition(DeclareQueue{queue_definition("changed", true)}, {1, 3}).ok());
    ASSERT_TRUE(
        broker->apply_definition(Bind{{"/", "amq.topic", Binding{"kept", true, "a", {}}}}, {1, 4})
            .ok());
  }
  QueuePtr kept = behind.find_virtual_host("/")->find_queue("kept");
  // What the member missed: "gone" deleted, "changed" redeclared transient, the binding moved.
  ASSERT_TRUE(leader.apply_definition(DeleteQueue{"/", "gone"}, {1, 5}).ok());
  ASSERT_TRUE(leader.apply_definition(DeleteQueue{"/", "changed"}, {1, 6}).ok());
  ASSERT_TRUE(
      leader.apply_definition(DeclareQueue{queue_definition("changed", false, 0, 1)}, {1, 7}).ok());
  ASSERT_TRUE(
      leader.apply_definition(Unbind{{"/", "amq.topic", Binding{"kept", true, "a", {}}}}, {1, 8})
          .ok());
  ASSERT_TRUE(
      leader.apply_definition(Bind{{"/", "amq.topic", Binding{"kept", true, "b", {}}}}, {1, 9})
          .ok());
  auto restored = behind.restore_definitions(leader.current_definitions().snapshot());
  ASSERT_TRUE(restored.ok()) << restored.error();
  EXPECT_EQ(behind.current_definitions(), leader.current_definitions());
  // A queue that did not change is the same queue (its messages stay).
  EXPECT_EQ(behind.find_virtual_host("/")->find_queue("kept"), kept);
}

TEST(BrokerDefinitions, ARefusedOrFailedLogAnswersEveryChange) {
  Broker broker({"/"}, 1);
  ManualMetadataLog log;
  broker.set_definition_store(&log);
  std::vector<bool> verdicts;
  auto record = [&](const Broker::DefinitionResult& r) { verdicts.push_back(r.ok()); };
  broker.change_definitions(DeclareQueue{queue_definition("a", true)}, record);
  log.refuse = true;
  broker.change_definitions(DeclareQueue{queue_definition("b", true)}, record);
  EXPECT_EQ(verdicts, std::vector<bool>{false});  // refused at once
  broker.fail_pending_commands();                 // the log failed: "a" will never be applied
  EXPECT_EQ(verdicts, (std::vector<bool>{false, false}));
  EXPECT_EQ(broker.pending_definition_count(), 0u);
}

}  // namespace
}  // namespace hamq::broker
