// Two (or three) transports on one io_context, talking over real loopback sockets.
#include "server/peer_transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <optional>

namespace hamq::server {
namespace {

constexpr auto wait_max = std::chrono::seconds(10);

// Runs the loop until `condition` holds; false if it did not within wait_max.
bool run_until(asio::io_context& io, const std::function<bool()>& condition) {
  auto deadline = std::chrono::steady_clock::now() + wait_max;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    io.restart();
    io.run_for(std::chrono::milliseconds(5));
  }
  return true;
}

struct Node {
  Node(asio::io_context& io, std::string name, std::string secret = "s3cret",
       std::string cluster_id = "c1", uint16_t port = 0) {
    config.cluster_id = std::move(cluster_id);
    config.node_name = std::move(name);
    config.node_id = config.node_name.back() - '0';
    config.incarnation = 100 + config.node_id;
    config.port = port;
    config.secret = std::move(secret);
    config.handshake_timeout_ms = 500;
    transport = std::make_unique<PeerTransport>(
        io, config,
        PeerTransportCallbacks{
            .on_peer_up = [this](const cluster::Hello& hello) { up.push_back(hello.node_name); },
            .on_peer_down = [this](const std::string& peer) { down.push_back(peer); },
            .on_batch =
                [this](const std::string& from, raft::NodeBatch batch) {
                  received.emplace_back(from, std::move(batch));
                },
            .on_propose =
                [this](const std::string& from, cluster::Propose propose) {
                  proposes.emplace_back(from, std::move(propose));
                },
            .on_proposed = [this](const std::string&,
                                  const cluster::Proposed& answer) { answers.push_back(answer); },
            .on_relay_forward =
                [this](const std::string& from, cluster::RelayForward forward) {
                  relay_forwards.emplace_back(from, std::move(forward));
                },
            .on_relay_answer =
                [this](const std::string& from, cluster::RelayAnswer answer) {
                  relay_answers.emplace_back(from, std::move(answer));
                },
            .on_join =
                [this](const cluster::Hello& joiner, const cluster::Join& join, const std::string&,
                       PeerTransportCallbacks::JoinAnswerFn answer) {
                  joins.emplace_back(joiner.node_name, join);
                  if (joiner.node_name == "n8") return;  // never answered
                  cluster::JoinAnswer reply;
                  if (joiner.node_name == "n9") {
                    reply.refused = "not n9";
                  } else {
                    reply.cluster_id = config.cluster_id;
                    reply.node_id = 4;
                    reply.members = {{config.node_name, config.bind_address, 1, 1},
                                     {joiner.node_name, join.host, join.port, 4}};
                  }
                  answer(reply);
                }});
    auto started = transport->start();
    EXPECT_TRUE(started.ok()) << (started.ok() ? "" : started.error());
  }
  PeerAddress address() const { return {config.node_name, config.bind_address, transport->port()}; }

  PeerTransportConfig config;
  std::unique_ptr<PeerTransport> transport;
  std::vector<std::string> up;
  std::vector<std::string> down;
  std::vector<std::pair<std::string, raft::NodeBatch>> received;
  std::vector<std::pair<std::string, cluster::Propose>> proposes;
  std::vector<cluster::Proposed> answers;
  std::vector<std::pair<std::string, cluster::RelayForward>> relay_forwards;
  std::vector<std::pair<std::string, cluster::RelayAnswer>> relay_answers;
  std::vector<std::pair<std::string, cluster::Join>> joins;
};

raft::NodeBatch batch_with_beat(uint64_t group) {
  raft::NodeBatch batch;
  batch.heartbeats.push_back({raft::GroupId{group}, raft::Term{2}, raft::LogIndex{5}, 1});
  return batch;
}

void introduce(Node& a, Node& b) {
  a.transport->add_peer(b.address());
  b.transport->add_peer(a.address());
}

TEST(PeerTransport, PeersShakeHandsAndCarryBatchesBothWays) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2");
  introduce(n1, n2);
  ASSERT_TRUE(run_until(
      io, [&] { return n1.transport->connected("n2") && n2.transport->connected("n1"); }));
  EXPECT_EQ(n1.up, std::vector<std::string>{"n2"});
  EXPECT_EQ(n2.up, std::vector<std::string>{"n1"});
  EXPECT_TRUE(n1.transport->send("n2", batch_with_beat(7)));
  EXPECT_TRUE(n2.transport->send("n1", batch_with_beat(8)));
  ASSERT_TRUE(run_until(io, [&] { return !n1.received.empty() && !n2.received.empty(); }));
  EXPECT_EQ(n2.received[0].first, "n1");
  EXPECT_EQ(n2.received[0].second.heartbeats, batch_with_beat(7).heartbeats);
  EXPECT_EQ(n1.received[0].second.heartbeats, batch_with_beat(8).heartbeats);
  EXPECT_EQ(n1.transport->refused(), 0u);
  EXPECT_EQ(n2.transport->refused(), 0u);
}

TEST(PeerTransport, AForwardedProposalAndItsAnswerCrossTheLink) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2");
  introduce(n1, n2);
  ASSERT_TRUE(run_until(io, [&] { return n1.transport->connected("n2"); }));
  EXPECT_TRUE(n1.transport->send_frame("n2", cluster::Propose{5, 1, "declare"}));
  ASSERT_TRUE(run_until(io, [&] { return !n2.proposes.empty(); }));
  EXPECT_EQ(n2.proposes[0].first, "n1");
  EXPECT_EQ(n2.proposes[0].second, (cluster::Propose{5, 1, "declare"}));
  EXPECT_TRUE(n2.transport->send_frame("n1", cluster::Proposed{5, 2, 9}));
  ASSERT_TRUE(run_until(io, [&] { return !n1.answers.empty(); }));
  EXPECT_EQ(n1.answers[0], (cluster::Proposed{5, 2, 9}));
}

TEST(PeerTransport, ARelayedCommandAndItsAnswerCrossTheLink) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2");
  introduce(n1, n2);
  ASSERT_TRUE(run_until(io, [&] { return n1.transport->connected("n2"); }));
  EXPECT_TRUE(n1.transport->send_frame("n2", cluster::RelayForward{7, "command"}));
  ASSERT_TRUE(run_until(io, [&] { return !n2.relay_forwards.empty(); }));
  EXPECT_EQ(n2.relay_forwards[0].first, "n1");
  EXPECT_EQ(n2.relay_forwards[0].second, (cluster::RelayForward{7, "command"}));
  EXPECT_TRUE(n2.transport->send_frame("n1", cluster::RelayAnswer{7, "effects"}));
  ASSERT_TRUE(run_until(io, [&] { return !n1.relay_answers.empty(); }));
  EXPECT_EQ(n1.relay_answers[0].first, "n2");
  EXPECT_EQ(n1.relay_answers[0].second, (cluster::RelayAnswer{7, "effects"}));
}

TEST(PeerTransport, APeerWithoutTheSecretIsRefusedAndGetsNothingThrough) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2", "wrong");
  introduce(n1, n2);
  ASSERT_TRUE(
      run_until(io, [&] { return n1.transport->refused() >= 2 && n2.transport->refused() >= 2; }));
  EXPECT_FALSE(n1.transport->connected("n2"));
  EXPECT_TRUE(n1.up.empty());
  EXPECT_FALSE(n1.transport->send("n2", batch_with_beat(1)));
  EXPECT_TRUE(n2.received.empty());
}

TEST(PeerTransport, ABlankNodeWithTheSecretAsksToJoinAndGetsTheAnswer) {
  asio::io_context io;
  Node n1(io, "n1");
  Node blank(io, "n4", "s3cret", "");
  std::optional<Result<cluster::JoinAnswer, std::string>> answer;
  blank.transport->request_join(n1.address(), cluster::Join{"127.0.0.1", 25999},
                                [&](auto result) { answer = std::move(result); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  ASSERT_TRUE(answer->ok()) << answer->error();
  EXPECT_EQ((*answer)->node_id, 4u);
  EXPECT_EQ((*answer)->cluster_id, "c1");
  ASSERT_EQ((*answer)->members.size(), 2u);
  EXPECT_EQ((*answer)->members[1], (cluster::LinkMember{"n4", "127.0.0.1", 25999, 4}));
  ASSERT_EQ(n1.joins.size(), 1u);
  EXPECT_EQ(n1.joins[0].first, "n4");
  // The joining link carried the join and nothing else: no peer came up.
  EXPECT_TRUE(n1.up.empty());
  EXPECT_FALSE(n1.transport->connected("n4"));
}

TEST(PeerTransport, AJoinIsRefusedWithTheClustersReasonOrWithoutTheSecret) {
  asio::io_context io;
  Node n1(io, "n1");
  Node refused(io, "n9", "s3cret", "");
  std::optional<Result<cluster::JoinAnswer, std::string>> answer;
  refused.transport->request_join(n1.address(), cluster::Join{"127.0.0.1", 25999},
                                  [&](auto result) { answer = std::move(result); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  ASSERT_TRUE(answer->ok());
  EXPECT_EQ((*answer)->refused, "not n9");

  Node outsider(io, "n5", "guessed", "");
  answer.reset();
  outsider.transport->request_join(n1.address(), cluster::Join{"127.0.0.1", 25999},
                                   [&](auto result) { answer = std::move(result); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  EXPECT_FALSE(answer->ok());
  EXPECT_EQ(n1.joins.size(), 1u);  // only n9's reached the cluster
  EXPECT_GE(n1.transport->refused(), 1u);
}

TEST(PeerTransport, AJoinFromEveryAddressIsRecordedWhereItCameFromAndAnUnansweredOneEnds) {
  asio::io_context io;
  Node n1(io, "n1");
  Node blank(io, "n4", "s3cret", "");
  std::optional<Result<cluster::JoinAnswer, std::string>> answer;
  blank.transport->request_join(n1.address(), cluster::Join{"::", 25999},
                                [&](auto result) { answer = std::move(result); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  ASSERT_EQ(n1.joins.size(), 1u);
  EXPECT_EQ(n1.joins[0].second.host, "127.0.0.1");  // not "::"
  // A member that never answers: the joining side gives up after the handshake timeout.
  Node waiting(io, "n8", "s3cret", "");
  answer.reset();
  waiting.transport->request_join(n1.address(), cluster::Join{"127.0.0.1", 25999},
                                  [&](auto result) { answer = std::move(result); });
  ASSERT_TRUE(run_until(io, [&] { return answer.has_value(); }));
  ASSERT_FALSE(answer->ok());
  EXPECT_NE(answer->error().find("no join in time"), std::string::npos) << answer->error();
}

TEST(PeerTransport, APeerOfAnotherClusterIsRefused) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2", "s3cret", "c2");
  introduce(n1, n2);
  ASSERT_TRUE(run_until(io, [&] { return n2.transport->refused() >= 1; }));
  EXPECT_FALSE(n1.transport->connected("n2"));
}

TEST(PeerTransport, ADeadPeerIsReportedAtOnceAndReconnectsWhenItComesBack) {
  asio::io_context io;
  Node n1(io, "n1");
  auto n2 = std::make_unique<Node>(io, "n2");
  introduce(n1, *n2);
  ASSERT_TRUE(run_until(io, [&] { return n1.transport->connected("n2"); }));
  uint16_t port = n2->transport->port();
  n2.reset();  // its sockets close: n1 hears of it from the connection, not a timeout
  ASSERT_TRUE(run_until(io, [&] { return !n1.down.empty(); }));
  EXPECT_EQ(n1.down, std::vector<std::string>{"n2"});
  // Back on the same port: n1 dials it again.
  Node again(io, "n2", "s3cret", "c1", port);
  again.transport->add_peer(n1.address());
  ASSERT_TRUE(run_until(io, [&] { return n1.transport->connected("n2"); }));
  EXPECT_EQ(n1.up, (std::vector<std::string>{"n2", "n2"}));
  EXPECT_TRUE(n1.transport->send("n2", batch_with_beat(3)));
  ASSERT_TRUE(run_until(io, [&] { return !again.received.empty(); }));
}

TEST(PeerTransport, GarbageAndStrangersAreDroppedAndTheLinkCarriesOn) {
  asio::io_context io;
  Node n1(io, "n1"), n2(io, "n2");
  // n3 is no peer of n2's: it dials n2 (its name sorts first) and is refused.
  Node n3(io, "n0");
  n3.transport->add_peer(n2.address());
  // A client that sends junk to n2's cluster port.
  asio::ip::tcp::socket junk(io);
  junk.connect({asio::ip::make_address("127.0.0.1"), n2.transport->port()});
  asio::write(junk, asio::buffer(std::string(100, 'x')));
  introduce(n1, n2);
  ASSERT_TRUE(
      run_until(io, [&] { return n2.transport->refused() >= 2 && n2.transport->connected("n1"); }));
  EXPECT_TRUE(n1.transport->send("n2", batch_with_beat(4)));
  ASSERT_TRUE(run_until(io, [&] { return !n2.received.empty(); }));
}

TEST(PeerTransport, ASilentConnectionIsDroppedAfterTheHandshakeTimeout) {
  asio::io_context io;
  Node n2(io, "n2");
  asio::ip::tcp::socket silent(io);
  silent.connect({asio::ip::make_address("127.0.0.1"), n2.transport->port()});
  ASSERT_TRUE(run_until(io, [&] { return n2.transport->refused() == 1; }));
}

TEST(PeerTransport, TheProofDependsOnSecretNonceAndBothNames) {
  std::string proof = link_proof("s", "nonce", "n1", "n2");
  EXPECT_EQ(proof.size(), 32u);
  EXPECT_EQ(proof, link_proof("s", "nonce", "n1", "n2"));
  EXPECT_NE(proof, link_proof("t", "nonce", "n1", "n2"));
  EXPECT_NE(proof, link_proof("s", "other", "n1", "n2"));
  EXPECT_NE(proof, link_proof("s", "nonce", "n2", "n1"));
}

}  // namespace
}  // namespace hamq::server
