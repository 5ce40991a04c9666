// AmqpClient: a small AMQP 0-9-1 client for the load generator, on a socket of its own and
// hamq's codec. One channel (1), heartbeats off. It is driven by one thread: writes are buffered
// and flushed, reads are polled and handed out as methods and assembled deliveries.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/frame.h"
#include "amqp/methods.gen.h"
#include "common/result.h"

namespace hamq::perf {

struct Endpoint {
  std::string host = "127.0.0.1";
  uint16_t port = 5672;
  std::string user = "guest";
  std::string password = "guest";
  std::string virtual_host = "/";
};

// amqp://user:password@host:port/vhost, each part optional ("amqp://localhost").
Result<Endpoint, std::string> parse_uri(std::string_view uri);

struct Message {
  amqp::Method method;  // basic.deliver, basic.return or basic.get-ok
  amqp::BasicProperties properties;
  std::string body;
};

class AmqpClient {
 public:
  AmqpClient() = default;
  ~AmqpClient();
  AmqpClient(const AmqpClient&) = delete;
  AmqpClient& operator=(const AmqpClient&) = delete;

  // Connects, logs in, and opens channel 1.
  Result<void, std::string> open(const Endpoint& endpoint);
  void close();

  // Sends a synchronous method on channel 1 and waits for its reply (any method; the caller
  // checks which). A channel or connection close is returned as the error.
  Result<amqp::Method, std::string> call(const amqp::Method& method, int timeout_ms = 10'000);

  // Buffers frames; flush() writes them.
  void send(const amqp::Method& method);
  void publish(const std::string& exchange, const std::string& routing_key,
               const amqp::BasicProperties& properties, std::string_view body, bool mandatory);
  size_t buffered_output() const { return output_.size() - output_sent_; }
  // Writes buffered frames; with wait=false only what the socket takes now.
  Result<void, std::string> flush(bool wait);

  // Waits up to timeout_ms for input (or for room to write, when output is buffered), reads
  // what is there and hands out each method and each complete message.
  Result<void, std::string> poll(int timeout_ms,
                                 const std::function<void(const amqp::Method&)>& on_method,
                                 const std::function<void(Message&)>& on_message);

 private:
  Result<void, std::string> read_some(int timeout_ms);
  Result<void, std::string> handle_frame(const amqp::Frame& frame,
                                         const std::function<void(const amqp::Method&)>& on_method,
                                         const std::function<void(Message&)>& on_message);
  Result<amqp::Method, std::string> next_method(int timeout_ms);

  int fd_ = -1;
  uint32_t frame_max_bytes_ = amqp::frame_min_size_bytes;
  amqp::FrameReader reader_{1u << 20};
  std::vector<uint8_t> output_;
  size_t output_sent_ = 0;
  std::optional<Message> assembling_;
  std::optional<uint64_t> body_size_;
};

}  // namespace hamq::perf
