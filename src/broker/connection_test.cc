#include "broker/connection.h"

#include <gtest/gtest.h>

#include "broker/test_client.h"

namespace hamq::broker {
namespace {

using amqp::Method;
using amqp::ReplyCode;
using testing::Client;

TEST(Handshake, PlainLoginReachesOpen) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  auto start = client.expect<amqp::ConnectionStart>();
  EXPECT_EQ(start.version_major, 0);
  EXPECT_EQ(start.version_minor, 9);
  EXPECT_EQ(start.mechanisms, "PLAIN AMQPLAIN");
  const auto* capabilities = start.server_properties.find("capabilities");
  ASSERT_NE(capabilities, nullptr);
  const auto& table = std::get<amqp::FieldTable>(capabilities->value);
  for (const char* name : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                           "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                           "authentication_failure_close", "per_consumer_qos", "direct_reply_to"}) {
    ASSERT_NE(table.find(name), nullptr) << name;
    EXPECT_EQ(*table.find(name), amqp::FieldValue(true)) << name;
  }
  EXPECT_EQ(*start.server_properties.find("product"), amqp::FieldValue("hamq"));

  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  auto tune = client.expect<amqp::ConnectionTune>();
  EXPECT_EQ(tune.channel_max, 2047);
  EXPECT_EQ(tune.frame_max, 131072u);
  EXPECT_EQ(tune.heartbeat, 60);
  client.send(0, amqp::ConnectionTuneOk{100, 65536, 30});
  client.send(0, amqp::ConnectionOpen{"/", "", false});
  client.expect<amqp::ConnectionOpenOk>();
  EXPECT_EQ(client.connection.state(), Connection::State::open);
  EXPECT_EQ(client.connection.user(), "guest");
  EXPECT_EQ(client.connection.channel_max(), 100);
  EXPECT_EQ(client.connection.frame_max(), 65536u);
  EXPECT_EQ(client.connection.heartbeat_s(), 30);
}

TEST(Handshake, WorksWhenFedOneByteAtATime) {
  Client client;
  std::vector<uint8_t> all(amqp::protocol_header_0_9_1.begin(), amqp::protocol_header_0_9_1.end());
  amqp::write_method_frame(all, 0, client.start_ok(Client::plain("guest", "guest")));
  amqp::write_method_frame(all, 0, amqp::ConnectionTuneOk{2047, 131072, 0});
  amqp::write_method_frame(all, 0, amqp::ConnectionOpen{"/", "", false});
  for (uint8_t byte : all) client.send_bytes(std::span(&byte, 1));
  auto frames = client.receive();
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_TRUE(std::holds_alternative<amqp::ConnectionOpenOk>(*frames[2].method));
  EXPECT_EQ(client.connection.state(), Connection::State::open);
}

TEST(Handshake, AmqplainLogin) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  amqp::FieldTable credentials;
  credentials.entries.emplace_back("LOGIN", "guest");
  credentials.entries.emplace_back("PASSWORD", "guest");
  std::vector<uint8_t> encoded;
  amqp::WireWriter writer(encoded);
  amqp::encode_field_table(writer, credentials);
  amqp::ConnectionStartOk start_ok;
  start_ok.mechanism = "AMQPLAIN";
  start_ok.response.assign(encoded.begin() + 4, encoded.end());  // without the length prefix
  client.send(0, start_ok);
  client.expect<amqp::ConnectionTune>();
}

TEST(Handshake, LegacyZeroNineHeaderIsAccepted) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9);
  client.expect<amqp::ConnectionStart>();
}

TEST(Handshake, WrongProtocolHeaderGetsOursBackAndEnds) {
  Client client;
  client.send_bytes(std::string_view("AMQP\x00\x00\x0a\x00", 8));
  client.receive();
  EXPECT_EQ(std::string(client.raw_header.begin(), client.raw_header.end()),
            amqp::protocol_header_0_9_1);
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, HttpRequestGetsProtocolHeaderAndEnds) {
  Client client;
  client.send_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  client.receive();
  EXPECT_EQ(client.raw_header.size(), 8u);
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, WrongPasswordWithFailureCloseCapabilityGets403) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "wrong")));
  auto text = client.expect_connection_close(ReplyCode::access_refused);
  EXPECT_EQ(text,
            "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For "
            "details see the broker logfile.");
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, WrongPasswordWithoutCapabilityOnlyEnds) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "wrong"), false));
  EXPECT_TRUE(client.receive().empty());
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, GuestIsRefusedFromAnotherHost) {
  Client client(/*loopback=*/false);
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  client.expect_connection_close(ReplyCode::access_refused);
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, UnknownUserIsRefused) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("nobody", "guest")));
  client.expect_connection_close(ReplyCode::access_refused);
}

TEST(Handshake, MalformedPlainResponseEnds) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok("guest\0guest"));
  EXPECT_TRUE(client.receive().empty());
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, UnknownMechanismEnds) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  auto start_ok = client.start_ok(Client::plain("guest", "guest"));
  start_ok.mechanism = "EXTERNAL";
  client.send(0, start_ok);
  EXPECT_TRUE(client.receive().empty());
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, FrameMaxBelowMinimumIsNotAllowed) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  client.expect<amqp::ConnectionTune>();
  client.send(0, amqp::ConnectionTuneOk{2047, 4096, 0});
  auto close = client.expect<amqp::ConnectionClose>();
  EXPECT_EQ(close.reply_code, 530);
  EXPECT_EQ(close.class_id, 10);
  EXPECT_EQ(close.method_id, 30);
  EXPECT_EQ(close.reply_text,
            "NOT_ALLOWED - negotiated frame_max = 4096 is lower than the minimum allowed value "
            "(8192)");
}

TEST(Handshake, FrameMaxAboveServerValueIsNotAllowed) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  client.expect<amqp::ConnectionTune>();
  client.send(0, amqp::ConnectionTuneOk{2047, 131073, 0});
  client.expect_connection_close(ReplyCode::not_allowed);
}

TEST(Handshake, UnknownVirtualHostIsNotAllowed) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  client.expect<amqp::ConnectionTune>();
  client.send(0, amqp::ConnectionTuneOk{2047, 131072, 0});
  client.send(0, amqp::ConnectionOpen{"nowhere", "", false});
  EXPECT_EQ(client.expect_connection_close(ReplyCode::not_allowed),
            "NOT_ALLOWED - vhost nowhere not found");
  client.send(0, amqp::ConnectionCloseOk{});
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, TimesOutSilently) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  EXPECT_EQ(client.connection.next_timer_ms(), client.now_ms + 10'000);
  client.connection.on_timer(client.now_ms + 9'999);
  EXPECT_FALSE(client.connection.finished());
  client.connection.on_timer(client.now_ms + 10'000);
  EXPECT_TRUE(client.connection.finished());
  EXPECT_TRUE(client.receive().empty());
}

TEST(Handshake, MethodOutOfOrderEnds) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, amqp::ConnectionOpen{"/", "", false});
  EXPECT_TRUE(client.connection.finished());
}

TEST(Handshake, ConnectionLimitIsNotAllowed) {
  Client first;
  first.config.connection_max = 1;
  // Two clients on one broker: build the second by hand on the first's broker.
  first.open();
  Connection second(first.config, first.broker, true, first.now_ms);
  std::vector<uint8_t> in(amqp::protocol_header_0_9_1.begin(), amqp::protocol_header_0_9_1.end());
  amqp::write_method_frame(in, 0, first.start_ok(Client::plain("guest", "guest")));
  amqp::write_method_frame(in, 0, amqp::ConnectionTuneOk{2047, 131072, 0});
  amqp::write_method_frame(in, 0, amqp::ConnectionOpen{"/", "", false});
  second.receive(in, first.now_ms);
  EXPECT_EQ(second.state(), Connection::State::closing);
  EXPECT_EQ(second.end_reason(),
            "NOT_ALLOWED - connection refused: node connection limit (1) is reached");
  // When the first goes, there is room again.
  first.send(0, amqp::ConnectionClose{200, "", 0, 0});
  EXPECT_EQ(first.broker.open_connection_count(), 0u);
}

TEST(Close, ClientCloseGetsCloseOk) {
  Client client;
  client.open();
  client.send(0, amqp::ConnectionClose{200, "bye", 0, 0});
  client.expect<amqp::ConnectionCloseOk>();
  EXPECT_TRUE(client.connection.finished());
  EXPECT_EQ(client.connection.end_reason(), "");
}

TEST(Close, ShutdownSendsConnectionForcedAndWaitsForCloseOk) {
  Client client;
  client.open();
  client.connection.shut_down(client.now_ms);
  auto text = client.expect_connection_close(ReplyCode::connection_forced);
  EXPECT_EQ(text, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'");
  EXPECT_FALSE(client.connection.finished());
  client.send(0, amqp::ConnectionCloseOk{});
  EXPECT_TRUE(client.connection.finished());
}

TEST(Close, ServerCloseGivesUpAfterTimeout) {
  Client client;
  client.open();
  client.connection.shut_down(client.now_ms);
  client.receive();
  client.connection.on_timer(client.now_ms + client.config.close_timeout_ms);
  EXPECT_TRUE(client.connection.finished());
}

TEST(Close, FramesAfterServerCloseAreDiscardedUntilCloseOk) {
  Client client;
  client.open();
  client.open_channel(1);
  client.send(0, amqp::BasicQos{});  // not a connection method: 504
  client.expect_connection_close(ReplyCode::channel_error);
  client.send(1, amqp::ChannelClose{200, "", 0, 0});
  client.send(5, amqp::ChannelOpen{});
  EXPECT_TRUE(client.receive().empty());
  client.send(0, amqp::ConnectionCloseOk{});
  EXPECT_TRUE(client.connection.finished());
}

TEST(Channels, OpenAndClose) {
  Client client;
  client.open();
  client.open_channel(1);
  client.open_channel(2047);
  EXPECT_EQ(client.connection.open_channel_count(), 2u);
  client.send(1, amqp::ChannelClose{200, "", 0, 0});
  client.expect<amqp::ChannelCloseOk>(1);
  EXPECT_EQ(client.connection.open_channel_count(), 1u);
  client.open_channel(1);  // the number is free again
}

TEST(Channels, FlowActiveIsAnsweredAndInactiveIsNotImplemented) {
  Client client;
  client.open();
  client.open_channel(1);
  client.send(1, amqp::ChannelFlow{true});
  EXPECT_TRUE(client.expect<amqp::ChannelFlowOk>(1).active);
  client.send(1, amqp::ChannelFlow{false});
  client.expect_connection_close(ReplyCode::not_implemented);
}

TEST(ProtocolViolation, MethodOnChannelThatIsNotOpenIsChannelError) {
  Client client;
  client.open();
  client.send(3, amqp::BasicQos{});
  auto close = client.expect<amqp::ConnectionClose>();
  EXPECT_EQ(close.reply_code, 504);
  EXPECT_EQ(close.reply_text, "CHANNEL_ERROR - expected 'channel.open' on channel 3");
  EXPECT_EQ(close.class_id, 60);
  EXPECT_EQ(close.method_id, 10);
}

TEST(ProtocolViolation, SecondChannelOpenIsChannelError) {
  Client client;
  client.open();
  client.open_channel(1);
  client.send(1, amqp::ChannelOpen{});
  EXPECT_EQ(client.expect_connection_close(ReplyCode::channel_error),
            "CHANNEL_ERROR - second 'channel.open' seen on channel 1");
}

TEST(ProtocolViolation, OpeningMoreChannelsThanChannelMaxIsNotAllowed) {
  Client client;
  client.send_bytes(amqp::protocol_header_0_9_1);
  client.expect<amqp::ConnectionStart>();
  client.send(0, client.start_ok(Client::plain("guest", "guest")));
  client.expect<amqp::ConnectionTune>();
  client.send(0, amqp::ConnectionTuneOk{2, 131072, 0});
  client.send(0, amqp::ConnectionOpen{"/", "", false});
  client.expect<amqp::ConnectionOpenOk>();
  // channel_max bounds how many are open, not their numbers (RabbitMQ's rule).
  client.open_channel(65535);
  client.open_channel(3);
  client.send(3, amqp::ChannelClose{200, "", 0, 0});
  client.expect<amqp::ChannelCloseOk>(3);
  client.open_channel(1000);
  client.send(7, amqp::ChannelOpen{});
  EXPECT_EQ(
      client.expect_connection_close(ReplyCode::not_allowed),
      "NOT_ALLOWED - number of channels opened (2) has reached the negotiated channel_max (2)");
}

TEST(ProtocolViolation, ContentFrameWithoutMethodIsUnexpectedFrame) {
  Client client;
  client.open();
  client.open_channel(1);
  std::vector<uint8_t> out;
  amqp::write_content_frames(out, 1, {}, std::vector<uint8_t>(10, 'x'), 131072);
  client.send_bytes(out);
  client.expect_connection_close(ReplyCode::unexpected_frame);
}

TEST(ProtocolViolation, ContentFrameOnChannelZeroIsUnexpectedFrame) {
  Client client;
  client.open();
  std::vector<uint8_t> out;
  amqp::write_content_frames(out, 0, {}, {}, 131072);
  client.send_bytes(out);
  client.expect_connection_close(ReplyCode::unexpected_frame);
}

TEST(ProtocolViolation, HeartbeatOnAChannelIsUnexpectedFrame) {
  Client client;
  client.open();
  std::vector<uint8_t> heartbeat = {amqp::frame_heartbeat, 0, 1, 0, 0, 0, 0, amqp::frame_end};
  client.send_bytes(heartbeat);
  client.expect_connection_close(ReplyCode::unexpected_frame);
}

TEST(ProtocolViolation, FrameLargerThanNegotiatedFrameMaxIsFrameError) {
  Client client;
  client.open();
  client.open_channel(1);
  std::vector<uint8_t> header = {amqp::frame_body, 0, 1, 0, 2, 0, 1};  // 131073 bytes
  client.send_bytes(header);
  client.expect_connection_close(ReplyCode::frame_error);
  EXPECT_TRUE(client.connection.finished());
}

TEST(ProtocolViolation, BadFrameEndIsFrameError) {
  Client client;
  client.open();
  std::vector<uint8_t> out;
  amqp::write_method_frame(out, 1, amqp::ChannelOpen{});
  out.back() = 0;
  client.send_bytes(out);
  client.expect_connection_close(ReplyCode::frame_error);
  EXPECT_TRUE(client.connection.finished());
}

TEST(ProtocolViolation, UnknownMethodIsCommandInvalid) {
  Client client;
  client.open();
  client.open_channel(1);
  std::vector<uint8_t> frame = {amqp::frame_method, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99,
                                amqp::frame_end};
  client.send_bytes(frame);
  client.expect_connection_close(ReplyCode::command_invalid);
}

TEST(ProtocolViolation, TruncatedArgumentsAreSyntaxError) {
  Client client;
  client.open();
  client.open_channel(1);
  // queue.declare with a queue name claiming 50 bytes but carrying 2.
  std::vector<uint8_t> frame = {
      amqp::frame_method, 0, 1, 0, 0, 0, 9, 0, 50, 0, 10, 0, 0, 50, 'a', 'b', amqp::frame_end};
  client.send_bytes(frame);
  client.expect_connection_close(ReplyCode::syntax_error);
}

TEST(ProtocolViolation, ConnectionMethodOnAChannelIsChannelError) {
  Client client;
  client.open();
  client.open_channel(1);
  client.send(1, amqp::ConnectionOpen{"/", "", false});
  client.expect_connection_close(ReplyCode::channel_error);
}

TEST(Heartbeats, SentAfterHalfAnIdleInterval) {
  Client client;
  client.open(/*heartbeat_s=*/10);
  client.connection.on_timer(client.now_ms + 4'999);
  EXPECT_TRUE(client.receive().empty());
  uint64_t at = client.connection.next_timer_ms();
  EXPECT_EQ(at, client.now_ms + 5'000);
  client.connection.on_timer(at);
  auto frames = client.receive();
  ASSERT_EQ(frames.size(), 1u);
  EXPECT_EQ(frames[0].type, amqp::FrameType::heartbeat);
}

TEST(Heartbeats, PeerSilentForTwoIntervalsIsDead) {
  Client client;
  client.open(/*heartbeat_s=*/10);
  client.connection.on_timer(client.now_ms + 19'999);
  EXPECT_FALSE(client.connection.finished());
  client.connection.on_timer(client.now_ms + 20'000);
  EXPECT_TRUE(client.connection.finished());
  EXPECT_EQ(client.connection.end_reason(), "missed heartbeats from client, timeout: 10s");
}

TEST(Heartbeats, AnyInputKeepsThePeerAlive) {
  Client client;
  client.open(/*heartbeat_s=*/10);
  client.now_ms += 15'000;
  std::vector<uint8_t> heartbeat;
  amqp::write_heartbeat_frame(heartbeat);
  client.send_bytes(heartbeat);
  client.connection.on_timer(client.now_ms + 10'000);
  EXPECT_FALSE(client.connection.finished());
}

// A connection not read (blocked by an alarm, or waiting for its log) does not count the peer's
// silence, and its timer is never due in the past (it would fire without end).
TEST(Heartbeats, APausedConnectionOnlyOwesItsOwnHeartbeats) {
  Client client;
  client.open(/*heartbeat_s=*/10);
  client.open_channel(1);
  client.broker.set_disk_alarm(true);
  client.publish(1, "", "nowhere", "blocks the connection");
  client.receive();
  ASSERT_TRUE(client.connection.reading_paused());
  uint64_t now = client.now_ms + 60'000;
  client.connection.on_timer(now);
  EXPECT_FALSE(client.connection.finished());
  EXPECT_GT(client.connection.next_timer_ms(), now);
  client.broker.set_disk_alarm(false);
  EXPECT_FALSE(client.connection.reading_paused());
  // Read again: the peer's silence counts from now on.
  client.connection.on_timer(now + 1);
  EXPECT_FALSE(client.connection.finished());
  client.connection.on_timer(now + 20'002);
  EXPECT_TRUE(client.connection.finished());
}

TEST(Heartbeats, OffWhenNegotiatedZero) {
  Client client;
  client.open(/*heartbeat_s=*/0);
  EXPECT_EQ(client.connection.next_timer_ms(), UINT64_MAX);
  client.connection.on_timer(client.now_ms + 1'000'000);
  EXPECT_FALSE(client.connection.finished());
  EXPECT_TRUE(client.receive().empty());
}

}  // namespace
}  // namespace hamq::broker
