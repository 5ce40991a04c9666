// A test client for broker::Connection: drives it as an AMQP client would, through its byte
// interface, and decodes what it answers. For tests only.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/frame.h"
#include "broker/connection.h"

namespace hamq::broker::testing {

using amqp::Method;
using amqp::ReplyCode;

struct Received {
  amqp::FrameType type;
  uint16_t channel;
  std::optional<Method> method;
  std::string body;  // of a body frame
};

// Drives a Connection as a client would, reading what it answers.
class Client {
 public:
  explicit Client(bool loopback = true) : connection(config, broker, loopback, now_ms) {}

  void send_bytes(std::span<const uint8_t> bytes) { connection.receive(bytes, now_ms); }
  void send_bytes(std::string_view bytes) {
    send_bytes({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  }
  void send(uint16_t channel, const Method& method) {
    std::vector<uint8_t> out;
    amqp::write_method_frame(out, channel, method);
    send_bytes(out);
  }

  // Everything the connection has sent since the last call.
  std::vector<Received> receive() {
    std::vector<uint8_t>& output = connection.output();
    std::span<const uint8_t> bytes(output);
    if (bytes.size() >= 8 &&
        std::string_view(reinterpret_cast<const char*>(bytes.data()), 4) == "AMQP") {
      raw_header.assign(bytes.begin(), bytes.begin() + 8);
      bytes = bytes.subspan(8);
    }
    reader.append(bytes);
    output.clear();
    std::vector<Received> frames;
    for (;;) {
      auto next = reader.next();
      EXPECT_TRUE(next.ok());
      if (!next.ok() || !next.value()) break;
      Received r{next.value()->type, next.value()->channel, std::nullopt, {}};
      if (r.type == amqp::FrameType::body) {
        r.body.assign(next.value()->payload.begin(), next.value()->payload.end());
      }
      if (r.type == amqp::FrameType::method) {
        auto method = amqp::decode_method(next.value()->payload);
        EXPECT_TRUE(method.ok());
        if (method.ok()) r.method = method.value();
      }
      frames.push_back(std::move(r));
    }
    return frames;
  }

  // Expects exactly one method frame and returns it as M.
  template <class M>
  M expect(uint16_t channel = 0) {
    auto frames = receive();
    EXPECT_EQ(frames.size(), 1u);
    if (frames.empty() || !frames[0].method) return M{};
    EXPECT_EQ(frames[0].channel, channel);
    EXPECT_TRUE(std::holds_alternative<M>(*frames[0].method))
        << "got " << amqp::method_name(*frames[0].method);
    if (!std::holds_alternative<M>(*frames[0].method)) return M{};
    return std::get<M>(*frames[0].method);
  }

  static std::string plain(std::string_view user, std::string_view password) {
    std::string response(1, '\0');
    response += user;
    response += '\0';
    response += password;
    return response;
  }

  amqp::ConnectionStartOk start_ok(std::string response, bool failure_close = true) {
    amqp::ConnectionStartOk start_ok;
    amqp::FieldTable capabilities;
    capabilities.entries.emplace_back("authentication_failure_close", failure_close);
    start_ok.client_properties.entries.emplace_back("capabilities", capabilities);
    start_ok.mechanism = "PLAIN";
    start_ok.response = std::move(response);
    return start_ok;
  }

  void open(uint16_t heartbeat_s = 0) {
    send_bytes(amqp::protocol_header_0_9_1);
    expect<amqp::ConnectionStart>();
    send(0, start_ok(plain("guest", "guest")));
    expect<amqp::ConnectionTune>();
    send(0, amqp::ConnectionTuneOk{2047, 131072, heartbeat_s});
    send(0, amqp::ConnectionOpen{"/", "", false});
    expect<amqp::ConnectionOpenOk>();
    ASSERT_EQ(connection.state(), Connection::State::open);
  }

  void publish(uint16_t channel, std::string exchange, std::string routing_key,
               std::string_view body, amqp::BasicProperties properties = {}) {
    std::vector<uint8_t> out;
    amqp::write_method_frame(
        out, channel,
        amqp::BasicPublish{0, std::move(exchange), std::move(routing_key), false, false});
    amqp::write_content_frames(out, channel, properties,
                               {reinterpret_cast<const uint8_t*>(body.data()), body.size()},
                               131072);
    send_bytes(out);
  }

  void open_channel(uint16_t channel) {
    send(channel, amqp::ChannelOpen{});
    expect<amqp::ChannelOpenOk>(channel);
  }

  // Expects connection.close with the code and returns its text.
  std::string expect_connection_close(ReplyCode code) {
    auto close = expect<amqp::ConnectionClose>();
    EXPECT_EQ(close.reply_code, static_cast<uint16_t>(code)) << close.reply_text;
    return close.reply_text;
  }

  ConnectionConfig config;
  Broker broker{{"/"}, 1};
  uint64_t now_ms = 1'000'000;
  Connection connection;
  amqp::FrameReader reader{1 << 20};
  std::vector<uint8_t> raw_header;
};

}  // namespace hamq::broker::testing
