#include "raft/coalescer.h"

#include <gtest/gtest.h>

namespace hamq::raft {
namespace {

Message heartbeat(uint64_t group, uint64_t to, uint64_t commit) {
  return Message{.type = MessageType::heartbeat,
                 .group = GroupId{group},
                 .from = NodeId{1},
                 .to = NodeId{to},
                 .from_incarnation = 5,
                 .term = Term{3},
                 .commit = LogIndex{commit}};
}

TEST(Coalescer, HeartbeatsOfManyGroupsTravelAsOneBatchPerPeer) {
  Outbox outbox(NodeId{1});
  for (uint64_t group = 1; group <= 10'000; ++group) {
    outbox.add(heartbeat(group, 2, group));
    outbox.add(heartbeat(group, 3, group));
  }
  std::vector<NodeBatch> batches = outbox.take();
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].heartbeats.size(), 10'000u);
  EXPECT_TRUE(batches[0].messages.empty());
  EXPECT_TRUE(outbox.empty());
}

TEST(Coalescer, ExpandGivesBackEveryMessage) {
  Outbox outbox(NodeId{1});
  Message append{.type = MessageType::append,
                 .group = GroupId{9},
                 .from = NodeId{1},
                 .to = NodeId{2},
                 .from_incarnation = 5,
                 .term = Term{3},
                 .index = LogIndex{4},
                 .log_term = Term{2},
                 .entries = {Entry{.term = Term{3}, .index = LogIndex{5}, .data = "x"}},
                 .commit = LogIndex{4}};
  Message answer{.type = MessageType::heartbeat_response,
                 .group = GroupId{8},
                 .from = NodeId{1},
                 .to = NodeId{2},
                 .from_incarnation = 5,
                 .term = Term{3}};
  outbox.add(heartbeat(7, 2, 6));
  outbox.add(append);
  outbox.add(answer);
  std::vector<NodeBatch> batches = outbox.take();
  ASSERT_EQ(batches.size(), 1u);
  std::vector<Message> messages = expand(batches[0]);
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0].type, MessageType::heartbeat);
  EXPECT_EQ(messages[0].group, GroupId{7});
  EXPECT_EQ(messages[0].commit, LogIndex{6});
  EXPECT_EQ(messages[0].from_incarnation, 5u);
  EXPECT_EQ(messages[0].to, NodeId{2});
  EXPECT_EQ(messages[1].type, MessageType::heartbeat_response);
  EXPECT_EQ(messages[1].group, GroupId{8});
  EXPECT_EQ(messages[1].term, Term{3});
  EXPECT_EQ(messages[2].entries, append.entries);
  EXPECT_EQ(messages[2].log_term, Term{2});
  EXPECT_FALSE(messages[1].reject);

  // A member catching up says where its log ends, an empty one too.
  for (uint64_t last : {uint64_t{0}, uint64_t{9}}) {
    Message catching_up = answer;
    catching_up.reject = true;
    catching_up.index = LogIndex{last};
    outbox.add(catching_up);
    std::vector<Message> told = expand(outbox.take().at(0));
    ASSERT_EQ(told.size(), 1u);
    EXPECT_TRUE(told[0].reject);
    EXPECT_EQ(told[0].index, LogIndex{last});
    EXPECT_EQ(told[0].commit, LogIndex{0});
  }
}

}  // namespace
}  // namespace hamq::raft
