// Connection: one AMQP 0-9-1 connection's protocol state, as a pure state machine.
//
// It owns the connection handshake (protocol header, start/start-ok with PLAIN and AMQPLAIN,
// tune/tune-ok, open/open-ok), heartbeats, the channel table and both ways of closing. It does no
// I/O and reads no clock: the runtime writes the socket's bytes into it (prepare_input and
// commit_input), passes the time in milliseconds of a monotonic clock with every call, sends what
// output() holds, calls on_timer no later than next_timer_ms(), and closes the socket once
// finished() is true and the output is flushed.
//
// Thread: a Connection belongs to one event loop and is only touched from it.
//
// Errors follow RabbitMQ (shared/reference/rabbitmq-extensions.md §1, §17): most handshake errors
// close the socket without a close method; after open, a soft error closes the channel with
// channel.close and a hard error closes the connection with connection.close.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "amqp/errors.h"
#include "amqp/frame.h"
#include "amqp/methods.gen.h"
#include "broker/broker.h"
#include "broker/channel.h"

namespace hamq::broker {

struct User {
  std::string name;
  std::string password;
  // As RabbitMQ's guest: refused unless the client connects over loopback.
  bool loopback_only = false;
};

struct ConnectionConfig {
  uint16_t channel_max = 2047;
  uint32_t frame_max_bytes = 131072;
  uint16_t heartbeat_s = 60;
  // From accept to open-ok; past it the socket is closed silently (RabbitMQ: 10 s).
  uint64_t handshake_timeout_ms = 10'000;
  // How long a server-sent connection.close waits for close-ok.
  uint64_t close_timeout_ms = 30'000;
  std::string product_version = "0.1.0";
  std::string cluster_name = "hamq";
  std::vector<User> users = {{"guest", "guest", true}};
  // Open connections the node accepts at connection.open; 0: no limit.
  uint32_t connection_max = 0;
  // The largest message body a publisher may send: RabbitMQ 3.x's default max_message_size
  // (4.x lowered it to 16 MiB, which breaks clients that publish large bodies;
  // docs/compatibility.md). At most amqp::body_size_bytes_max (512 MiB, RabbitMQ's own ceiling).
  uint64_t message_size_bytes_max = 128ull << 20;
};

// A connection whose unsent output passes the high mark stops receiving deliveries until it is
// below the low mark: a consumer that does not keep up (with no-ack, nothing else limits it) is
// held back instead of growing the broker's memory.
constexpr size_t output_backlog_high_bytes = 4 << 20;
constexpr size_t output_backlog_low_bytes = 1 << 20;

class Connection : public BlockedPublisher {
 public:
  enum class State {
    awaiting_protocol_header,
    awaiting_start_ok,
    awaiting_tune_ok,
    awaiting_open,
    open,
    closing,   // sent connection.close, waiting for close-ok
    finished,  // nothing more to do; close the socket after flushing output
  };

  // config and broker must outlive the connection.
  Connection(const ConnectionConfig& config, Broker& broker, bool peer_is_loopback,
             uint64_t now_ms);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Space to read at least `bytes` from the socket into; commit_input says how many arrived.
  std::span<uint8_t> prepare_input(size_t bytes) { return reader_.prepare(bytes); }
  void commit_input(size_t bytes, uint64_t now_ms);
  // The same, from a buffer (tests, fuzzers).
  void receive(std::span<const uint8_t> bytes, uint64_t now_ms);

  // Heartbeats and timeouts.
  void on_timer(uint64_t now_ms);
  uint64_t next_timer_ms() const;

  // The broker is shutting down: connection.close with 320 CONNECTION_FORCED.
  void shut_down(uint64_t now_ms);
  // The socket is gone: channels give back what they held, exclusive queues are deleted.
  // Also done when the connection finishes; idempotent.
  void release();

  // Bytes to send, in order. The runtime takes them as it writes.
  std::vector<uint8_t>& output() { return output_; }
  // The runtime says how many taken bytes are still being written. While output and those are
  // above output_backlog_high_bytes, the connection's consumers get no deliveries.
  void set_bytes_in_flight(size_t bytes);
  size_t output_backlog() const { return output_.size() + bytes_in_flight_; }
  // Called whenever output grows, also when another connection's publish caused it.
  void set_output_listener(std::function<void()> listener) {
    output_listener_ = std::move(listener);
  }

  // For channels.
  void send(uint16_t channel, const amqp::Method& method);
  void send_content(uint16_t channel, const amqp::Method& method,
                    const amqp::BasicProperties& properties, std::string_view body);
  // Something finished outside the handling of this connection's input (a durable queue's
  // entry was applied): the runtime calls run_deferred() soon, which sends what it earned.
  void wake();
  // Sends the confirms earned since, and handles the input held back while a reply waited.
  void run_deferred(uint64_t now_ms);
  // A channel's reply waits for a durable queue: no further frames are handled until it is
  // done (replies on a channel keep their order), and the socket is not read meanwhile.
  void await_reply() { ++awaiting_replies_; }
  void reply_done();
  void replies_abandoned(size_t count) { awaiting_replies_ -= count; }
  // A channel's method failed after its handling returned (its change was not committed, or
  // the metadata log refused it): the channel or the connection is closed as the error says.
  void fail_later(uint16_t channel, const amqp::ProtocolError& error);
  // A message was published on this connection (it is blocked while the memory alarm lasts).
  void note_publish() { published_in_batch_ = true; }
  Broker& broker() { return broker_; }
  const ConnectionConfig& config() const { return config_; }
  VirtualHost& virtual_host() { return *vhost_; }
  ConnectionId id() const { return id_; }
  bool client_supports_cancel_notify() const { return client_cancel_notify_; }

  // While true the runtime must not read from the socket: the memory alarm blocks this
  // publisher. The output listener is called when it may read again.
  bool reading_paused() const { return blocked_ || !flow_waits_.empty() || awaiting_replies_ > 0; }
  // BlockedPublisher
  void unblock() override;
  void flow_released(const Queue* queue) override;
  bool consumes_from(const Queue& queue) const override;
  // A channel published to a queue whose consumers, or whose log, are not keeping up: reading
  // pauses until the broker releases it (Broker::check_flow).
  void throttle(const QueuePtr& queue);

  State state() const { return state_; }
  bool finished() const { return state_ == State::finished; }
  // Why the connection ended, for the log; empty for an orderly close.
  const std::string& end_reason() const { return end_reason_; }
  const std::string& user() const { return user_; }
  const std::string& virtual_host_name() const { return virtual_host_; }
  uint16_t heartbeat_s() const { return heartbeat_s_; }
  uint32_t frame_max() const { return frame_max_bytes_; }
  uint16_t channel_max() const { return channel_max_; }
  size_t open_channel_count() const;

 private:
  void process_input(uint64_t now_ms);
  void handle_protocol_header();
  void handle_frame(const amqp::Frame& frame, uint64_t now_ms);
  void handle_handshake_method(const amqp::Method& method, uint64_t now_ms);
  void handle_start_ok(const amqp::ConnectionStartOk& start_ok);
  void handle_tune_ok(const amqp::ConnectionTuneOk& tune_ok, uint64_t now_ms);
  void handle_open(const amqp::ConnectionOpen& open, uint64_t now_ms);
  void handle_connection_method(const amqp::Method& method, uint64_t now_ms);
  void handle_channel_frame(const amqp::Frame& frame, uint64_t now_ms);
  void handle_channel_method(uint16_t channel, const amqp::Method& method, uint64_t now_ms);

  bool authenticate(std::string_view mechanism, std::string_view response);

  // Reports an error from a channel's method: soft ones close the channel, hard ones the
  // connection.
  void fail(uint16_t channel, amqp::ProtocolError error, const amqp::Method* method,
            uint64_t now_ms);
  void wrote_output();
  // A hard error: connection.close, then wait for close-ok.
  void close_connection(const amqp::ProtocolError& error, uint64_t now_ms);
  // A soft error: channel.close, then discard the channel's frames until close-ok.
  void close_channel(uint16_t channel, const amqp::ProtocolError& error);
  void drop_channel(uint16_t channel);
  // Ends without a close method (handshake errors, missed heartbeats).
  void end(std::string reason);
  // The client's connection.close: its exclusive queues are deleted first, so that close-ok
  // tells the client they are gone (a reconnecting client finds the name free).
  void close_by_peer();

  const ConnectionConfig& config_;
  Broker& broker_;
  const ConnectionId id_;
  const bool peer_is_loopback_;
  VirtualHost* vhost_ = nullptr;
  std::function<void()> output_listener_;
  bool released_ = false;
  bool counted_ = false;  // counted in the broker's open connections
  bool client_cancel_notify_ = false;
  bool client_blocked_notify_ = false;
  bool blocked_ = false;
  bool published_in_batch_ = false;
  size_t awaiting_replies_ = 0;
  bool deferred_ = false;  // run_deferred has work
  // Cleared when the connection is released; what completes later finds no connection.
  std::shared_ptr<Connection*> alive_ = std::make_shared<Connection*>(this);
  bool reset_liveness_ = false;           // after a block, silence so far does not count
  std::vector<const Queue*> flow_waits_;  // queues whose backlog pauses reading
  size_t bytes_in_flight_ = 0;
  bool consumers_suspended_ = false;
  State state_ = State::awaiting_protocol_header;
  amqp::FrameReader reader_;
  std::vector<uint8_t> output_;
  std::unordered_map<uint16_t, std::unique_ptr<Channel>> channels_;  // open channels
  std::unordered_set<uint16_t> closing_channels_;  // sent channel.close, awaiting close-ok

  uint16_t channel_max_ = 0;
  uint32_t frame_max_bytes_ = amqp::frame_min_size_bytes;
  uint16_t heartbeat_s_ = 0;
  bool client_wants_auth_failure_close_ = false;
  std::string user_;
  std::string virtual_host_;
  std::string end_reason_;

  const uint64_t handshake_deadline_ms_;
  uint64_t close_deadline_ms_ = 0;
  uint64_t now_ms_;  // the time of the call being handled
  uint64_t last_input_ms_;
  uint64_t last_output_ms_;
};

// The server-properties table of connection.start: product, version, and the capabilities
// RabbitMQ clients look for.
amqp::FieldTable server_properties(const ConnectionConfig& config);

}  // namespace hamq::broker
