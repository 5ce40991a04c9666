#include "broker/connection.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/verify.h"

namespace hamq::broker {

using amqp::Frame;
using amqp::FrameType;
using amqp::Method;
using amqp::ProtocolError;
using amqp::ReplyCode;

namespace {

constexpr uint64_t never_ms = std::numeric_limits<uint64_t>::max();
// Reads from the socket are asked for in pieces of this size.
constexpr size_t read_chunk_bytes = 64 * 1024;

bool equal_in_constant_time(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char difference = 0;
  for (size_t i = 0; i < a.size(); ++i) difference |= static_cast<unsigned char>(a[i] ^ b[i]);
  return difference == 0;
}

bool table_flag(const amqp::FieldTable& table, std::string_view key) {
  const amqp::FieldValue* value = table.find(key);
  return value != nullptr && std::holds_alternative<bool>(value->value) &&
         std::get<bool>(value->value);
}

ProtocolError error(ReplyCode code, std::string text, const Method* method = nullptr) {
  ProtocolError e{code, std::move(text)};
  if (method != nullptr) {
    e.class_id = amqp::method_class_id(*method);
    e.method_id = amqp::method_method_id(*method);
  }
  return e;
}

}  // namespace

amqp::FieldTable server_properties(const ConnectionConfig& config) {
  amqp::FieldTable capabilities;
  for (const char* name : {"publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                           "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
                           "authentication_failure_close", "per_consumer_qos", "direct_reply_to"}) {
    capabilities.entries.emplace_back(name, true);
  }
  amqp::FieldTable properties;
  properties.entries = {
      {"capabilities", capabilities},
      {"cluster_name", config.cluster_name},
      {"copyright", "Copyright (c) the hamq authors"},
      {"information", "hamq, a replicated AMQP 0-9-1 message broker"},
      {"platform", "C++20"},
      {"product", "hamq"},
      {"version", config.product_version},
  };
  return properties;
}

Connection::Connection(const ConnectionConfig& config, Broker& broker, bool peer_is_loopback,
                       uint64_t now_ms)
    : config_(config),
      broker_(broker),
      id_(broker.new_connection_id()),
      peer_is_loopback_(peer_is_loopback),
      reader_(amqp::frame_min_size_bytes),
      handshake_deadline_ms_(now_ms + config.handshake_timeout_ms),
      now_ms_(now_ms),
      last_input_ms_(now_ms),
      last_output_ms_(now_ms) {}

Connection::~Connection() {
  release();
}

size_t Connection::open_channel_count() const {
  return channels_.size();
}

void Connection::release() {
  if (released_) return;
  released_ = true;
  *alive_ = nullptr;
  if (counted_) broker_.connection_closed();
  broker_.connection_gone(id_);
  broker_.forget_publisher(this);
  flow_waits_.clear();
  for (auto& [number, channel] : channels_) channel->release();
  channels_.clear();
  // Its exclusive queues go with it.
  if (vhost_ != nullptr) {
    for (const auto& name : vhost_->queues_owned_by(id_)) {
      if (QueuePtr queue = vhost_->find_queue(name)) broker_.propose_queue_delete(queue);
    }
  }
  broker_.update_memory_alarm();
}

void Connection::commit_input(size_t bytes, uint64_t now_ms) {
  now_ms_ = now_ms;
  reader_.commit(bytes);
  if (bytes > 0) last_input_ms_ = now_ms;
  process_input(now_ms);
}

void Connection::receive(std::span<const uint8_t> bytes, uint64_t now_ms) {
  auto space = prepare_input(std::max(bytes.size(), read_chunk_bytes));
  if (!bytes.empty()) std::memcpy(space.data(), bytes.data(), bytes.size());
  commit_input(bytes.size(), now_ms);
}

void Connection::process_input(uint64_t now_ms) {
  if (state_ == State::awaiting_protocol_header) handle_protocol_header();
  while (state_ != State::finished && state_ != State::awaiting_protocol_header &&
         awaiting_replies_ == 0) {
    auto next = reader_.next();
    if (!next.ok()) {
      // The byte stream is no longer in step: report and stop reading.
      if (state_ == State::open || state_ == State::closing) {
        send(0, amqp::ConnectionClose{static_cast<uint16_t>(next.error().code),
                                      next.error().reply_text(), 0, 0});
      }
      end(next.error().reply_text());
      return;
    }
    if (!next.value()) break;
    handle_frame(*next.value(), now_ms);
  }
  for (auto& [number, channel] : channels_) channel->flush_confirms();
  broker_.update_memory_alarm();
  if (published_in_batch_ && broker_.publishing_blocked() && !blocked_ && state_ == State::open) {
    // Reference §8: a connection that publishes during the alarm stops being read.
    blocked_ = true;
    broker_.add_blocked(this);
    if (client_blocked_notify_) {
      send(0, amqp::ConnectionBlocked{std::string(broker_.blocked_reason())});
    }
  }
  published_in_batch_ = false;
  if (state_ == State::finished) release();
}

void Connection::wake() {
  deferred_ = true;
  if (output_listener_) output_listener_();
}

void Connection::fail_later(uint16_t channel, const amqp::ProtocolError& error) {
  if (state_ != State::open || !channels_.contains(channel)) return;
  fail(channel, error, nullptr, now_ms_);
  wake();
}

void Connection::reply_done() {
  --awaiting_replies_;
  if (awaiting_replies_ == 0) wake();  // the frames held back can go on
}

void Connection::run_deferred(uint64_t now_ms) {
  if (!deferred_ || released_) return;
  deferred_ = false;
  if (state_ == State::finished) return;
  now_ms_ = now_ms;
  process_input(now_ms);  // held-back frames, if any; then confirms go out
}

bool Connection::consumes_from(const Queue& queue) const {
  for (const auto& [number, channel] : channels_) {
    if (channel->consumes_from(queue)) return true;
  }
  return false;
}

void Connection::throttle(const QueuePtr& queue) {
  if (std::find(flow_waits_.begin(), flow_waits_.end(), queue.get()) != flow_waits_.end()) return;
  flow_waits_.push_back(queue.get());
  broker_.wait_for_flow(this, queue.get());
}

void Connection::flow_released(const Queue* queue) {
  std::erase(flow_waits_, queue);
  if (!reading_paused()) {
    reset_liveness_ = true;
    if (output_listener_) output_listener_();  // the runtime resumes reading
  }
}

void Connection::unblock() {
  if (!blocked_) return;
  blocked_ = false;
  reset_liveness_ = true;
  if (client_blocked_notify_ && state_ == State::open) send(0, amqp::ConnectionUnblocked{});
  // The runtime resumes reading unless flow control still holds the connection.
  if (output_listener_) output_listener_();
}

void Connection::handle_protocol_header() {
  auto buffered = reader_.buffered();
  if (buffered.size() < amqp::protocol_header_bytes) return;
  std::string_view header(reinterpret_cast<const char*>(buffered.data()),
                          amqp::protocol_header_bytes);
  reader_.consume(amqp::protocol_header_bytes);
  if (header != amqp::protocol_header_0_9_1 && header != amqp::protocol_header_0_9) {
    // Spec §4.2.2: answer with the header we speak, then close.
    auto* p = reinterpret_cast<const uint8_t*>(amqp::protocol_header_0_9_1.data());
    output_.insert(output_.end(), p, p + amqp::protocol_header_bytes);
    end("unsupported protocol header");
    return;
  }
  amqp::ConnectionStart start;
  start.version_major = 0;
  start.version_minor = 9;
  start.server_properties = server_properties(config_);
  start.mechanisms = "PLAIN AMQPLAIN";
  start.locales = "en_US";
  send(0, start);
  state_ = State::awaiting_start_ok;
}

void Connection::handle_frame(const Frame& frame, uint64_t now_ms) {
  if (frame.type == FrameType::heartbeat) {
    if (frame.channel != 0) {
      close_connection(error(ReplyCode::unexpected_frame, "heartbeat frame on a channel"), now_ms);
    }
    return;  // any input already counts as liveness
  }
  if (frame.channel != 0) {
    handle_channel_frame(frame, now_ms);
    return;
  }
  if (frame.type != FrameType::method) {
    close_connection(error(ReplyCode::unexpected_frame, "content frame on channel 0"), now_ms);
    return;
  }
  auto method = amqp::decode_method(frame.payload);
  if (!method.ok()) {
    if (state_ == State::open) {
      close_connection(method.error(), now_ms);
    } else if (state_ != State::closing) {
      end(method.error().reply_text());
    }
    return;
  }
  if (state_ == State::open || state_ == State::closing) {
    handle_connection_method(method.value(), now_ms);
  } else {
    handle_handshake_method(method.value(), now_ms);
  }
}

void Connection::handle_handshake_method(const Method& method, uint64_t now_ms) {
  if (state_ == State::awaiting_start_ok) {
    if (auto* start_ok = std::get_if<amqp::ConnectionStartOk>(&method)) {
      handle_start_ok(*start_ok);
      return;
    }
  } else if (state_ == State::awaiting_tune_ok) {
    if (auto* tune_ok = std::get_if<amqp::ConnectionTuneOk>(&method)) {
      handle_tune_ok(*tune_ok, now_ms);
      return;
    }
  } else if (state_ == State::awaiting_open) {
    if (auto* open = std::get_if<amqp::ConnectionOpen>(&method)) {
      handle_open(*open, now_ms);
      return;
    }
  }
  if (std::holds_alternative<amqp::ConnectionClose>(method)) {
    send(0, amqp::ConnectionCloseOk{});
    end("client closed during the handshake");
    return;
  }
  end(std::string("unexpected ") + std::string(amqp::method_name(method)) +
      " during the handshake");
}

void Connection::handle_start_ok(const amqp::ConnectionStartOk& start_ok) {
  const amqp::FieldValue* capabilities = start_ok.client_properties.find("capabilities");
  if (capabilities != nullptr && std::holds_alternative<amqp::FieldTable>(capabilities->value)) {
    const auto& table = std::get<amqp::FieldTable>(capabilities->value);
    client_wants_auth_failure_close_ = table_flag(table, "authentication_failure_close");
    client_cancel_notify_ = table_flag(table, "consumer_cancel_notify");
    client_blocked_notify_ = table_flag(table, "connection.blocked");
  }
  if (start_ok.mechanism != "PLAIN" && start_ok.mechanism != "AMQPLAIN") {
    end("COMMAND_INVALID - unknown authentication mechanism '" + start_ok.mechanism + "'");
    return;
  }
  if (!authenticate(start_ok.mechanism, start_ok.response)) {
    if (state_ == State::finished) return;  // malformed response, already ended
    std::string text = "ACCESS_REFUSED - Login was refused using authentication mechanism " +
                       start_ok.mechanism + ". For details see the broker logfile.";
    if (client_wants_auth_failure_close_) {
      send(0, amqp::ConnectionClose{static_cast<uint16_t>(ReplyCode::access_refused), text,
                                    amqp::ConnectionStartOk::amqp_class_id,
                                    amqp::ConnectionStartOk::amqp_method_id});
    }
    end(text + " (user '" + user_ + "')");
    return;
  }
  send(0, amqp::ConnectionTune{config_.channel_max, config_.frame_max_bytes, config_.heartbeat_s});
  state_ = State::awaiting_tune_ok;
}

bool Connection::authenticate(std::string_view mechanism, std::string_view response) {
  std::string login;
  std::string password;
  if (mechanism == "PLAIN") {
    // RFC 4616: authzid NUL authcid NUL passwd; RabbitMQ requires the authzid to be empty.
    size_t second = response.find('\0', 1);
    if (response.empty() || response[0] != '\0' || second == std::string_view::npos) {
      end("SYNTAX_ERROR - malformed PLAIN response");
      return false;
    }
    login = response.substr(1, second - 1);
    password = response.substr(second + 1);
  } else {
    // AMQPLAIN: a field table without its length prefix, with string LOGIN and PASSWORD.
    amqp::WireReader reader({reinterpret_cast<const uint8_t*>(response.data()), response.size()});
    amqp::FieldTable table;
    amqp::decode_field_table_entries(reader, table);
    const amqp::FieldValue* l = table.find("LOGIN");
    const amqp::FieldValue* p = table.find("PASSWORD");
    if (reader.failed() || l == nullptr || p == nullptr ||
        !std::holds_alternative<std::string>(l->value) ||
        !std::holds_alternative<std::string>(p->value)) {
      end("SYNTAX_ERROR - malformed AMQPLAIN response");
      return false;
    }
    login = std::get<std::string>(l->value);
    password = std::get<std::string>(p->value);
  }
  user_ = login;
  for (const User& user : config_.users) {
    if (user.name != login) continue;
    if (!equal_in_constant_time(user.password, password)) return false;
    return !user.loopback_only || peer_is_loopback_;
  }
  return false;
}

void Connection::handle_tune_ok(const amqp::ConnectionTuneOk& tune_ok, uint64_t now_ms) {
  auto refuse = [&](std::string text) {
    ProtocolError e = error(ReplyCode::not_allowed, std::move(text));
    e.class_id = amqp::ConnectionTune::amqp_class_id;
    e.method_id = amqp::ConnectionTune::amqp_method_id;
    close_connection(e, now_ms);
  };
  if (tune_ok.frame_max < amqp::frame_min_size_bytes) {
    refuse("negotiated frame_max = " + std::to_string(tune_ok.frame_max) +
           " is lower than the minimum allowed value (" +
           std::to_string(amqp::frame_min_size_bytes) + ")");
    return;
  }
  if (tune_ok.frame_max > config_.frame_max_bytes) {
    refuse("negotiated frame_max = " + std::to_string(tune_ok.frame_max) +
           " is higher than the maximum allowed value (" + std::to_string(config_.frame_max_bytes) +
           ")");
    return;
  }
  if (tune_ok.channel_max == 0 || tune_ok.channel_max > config_.channel_max) {
    refuse("negotiated channel_max = " + std::to_string(tune_ok.channel_max) +
           " is outside the allowed range (1.." + std::to_string(config_.channel_max) + ")");
    return;
  }
  channel_max_ = tune_ok.channel_max;
  frame_max_bytes_ = tune_ok.frame_max;
  heartbeat_s_ = tune_ok.heartbeat;
  reader_.set_frame_max(frame_max_bytes_);
  state_ = State::awaiting_open;
}

void Connection::handle_open(const amqp::ConnectionOpen& open, uint64_t now_ms) {
  const Method method = open;
  vhost_ = broker_.find_virtual_host(open.virtual_host);
  if (vhost_ == nullptr) {
    close_connection(
        error(ReplyCode::not_allowed, "vhost " + open.virtual_host + " not found", &method),
        now_ms);
    return;
  }
  if (config_.connection_max != 0 && broker_.open_connection_count() >= config_.connection_max) {
    close_connection(error(ReplyCode::not_allowed,
                           "connection refused: node connection limit (" +
                               std::to_string(config_.connection_max) + ") is reached",
                           &method),
                     now_ms);
    return;
  }
  broker_.connection_opened();
  counted_ = true;
  virtual_host_ = open.virtual_host;
  send(0, amqp::ConnectionOpenOk{});
  state_ = State::open;
}

void Connection::handle_connection_method(const Method& method, uint64_t now_ms) {
  if (std::holds_alternative<amqp::ConnectionClose>(method)) {
    close_by_peer();
    return;
  }
  if (std::holds_alternative<amqp::ConnectionCloseOk>(method)) {
    if (state_ == State::closing) end("");
    return;
  }
  if (state_ == State::closing) return;  // everything else is discarded while closing
  if (std::holds_alternative<amqp::ConnectionUpdateSecret>(method)) {
    // Users are internal and authenticated once, by password: as RabbitMQ's internal backend,
    // a new secret is accepted and changes nothing (token-refreshing clients send it).
    send(0, amqp::ConnectionUpdateSecretOk{});
    return;
  }
  if (amqp::method_class_id(method) != amqp::class_connection) {
    close_connection(error(ReplyCode::channel_error,
                           "expected a connection method on channel 0, got " +
                               std::string(amqp::method_name(method)),
                           &method),
                     now_ms);
    return;
  }
  close_connection(error(ReplyCode::channel_error,
                         "unexpected method in connection state running: " +
                             std::string(amqp::method_name(method)),
                         &method),
                   now_ms);
}

void Connection::handle_channel_frame(const Frame& frame, uint64_t now_ms) {
  if (state_ == State::closing) return;
  if (state_ != State::open) {
    end("frame on channel " + std::to_string(frame.channel) + " before connection.open-ok");
    return;
  }
  if (closing_channels_.contains(frame.channel)) {
    // After channel.close only close and close-ok mean anything (reference §1.6).
    if (frame.type != FrameType::method) return;
    auto method = amqp::decode_method(frame.payload);
    if (!method.ok()) return;
    if (std::holds_alternative<amqp::ChannelClose>(method.value())) {
      send(frame.channel, amqp::ChannelCloseOk{});
      closing_channels_.erase(frame.channel);
    } else if (std::holds_alternative<amqp::ChannelCloseOk>(method.value())) {
      closing_channels_.erase(frame.channel);
    }
    return;
  }
  auto it = channels_.find(frame.channel);
  Channel* channel = it == channels_.end() ? nullptr : it->second.get();
  if (frame.type != FrameType::method) {
    if (channel == nullptr || !channel->expects_content()) {
      close_connection(error(ReplyCode::unexpected_frame,
                             "content frame on channel " + std::to_string(frame.channel) +
                                 " without a content method before it"),
                       now_ms);
      return;
    }
    auto result = frame.type == FrameType::header ? channel->handle_content_header(frame.payload)
                                                  : channel->handle_content_body(frame.payload);
    if (!result.ok()) {
      fail(frame.channel, result.error(), nullptr, now_ms);
    }
    return;
  }
  auto method = amqp::decode_method(frame.payload);
  if (!method.ok()) {
    close_connection(method.error(), now_ms);
    return;
  }
  if (channel != nullptr && channel->expects_content()) {
    close_connection(
        error(ReplyCode::unexpected_frame,
              "expected content for basic.publish on channel " + std::to_string(frame.channel) +
                  ", got " + std::string(amqp::method_name(method.value())),
              &method.value()),
        now_ms);
    return;
  }
  handle_channel_method(frame.channel, method.value(), now_ms);
}

void Connection::handle_channel_method(uint16_t number, const Method& method, uint64_t now_ms) {
  auto it = channels_.find(number);
  if (it == channels_.end()) {
    if (!std::holds_alternative<amqp::ChannelOpen>(method)) {
      close_connection(
          error(ReplyCode::channel_error,
                "expected 'channel.open' on channel " + std::to_string(number), &method),
          now_ms);
      return;
    }
    // channel_max bounds how many channels are open, not their numbers: clients such as aiormq
    // open channel 65535 on a connection of 2047 (RabbitMQ's rule and words).
    // Channels awaiting close-ok count too, so that their number stays bounded.
    size_t opened = channels_.size() + closing_channels_.size();
    if (opened >= channel_max_) {
      close_connection(error(ReplyCode::not_allowed,
                             "number of channels opened (" + std::to_string(opened) +
                                 ") has reached the negotiated channel_max (" +
                                 std::to_string(channel_max_) + ")",
                             &method),
                       now_ms);
      return;
    }
    channels_.emplace(number, std::make_unique<Channel>(*this, number));
    send(number, amqp::ChannelOpenOk{});
    return;
  }
  if (std::holds_alternative<amqp::ChannelOpen>(method)) {
    close_connection(
        error(ReplyCode::channel_error,
              "second 'channel.open' seen on channel " + std::to_string(number), &method),
        now_ms);
    return;
  }
  if (std::holds_alternative<amqp::ChannelClose>(method)) {
    drop_channel(number);
    send(number, amqp::ChannelCloseOk{});
    return;
  }
  if (std::holds_alternative<amqp::ChannelCloseOk>(method)) return;
  if (auto* flow = std::get_if<amqp::ChannelFlow>(&method)) {
    if (!flow->active) {
      close_connection(error(ReplyCode::not_implemented, "active=false is not supported", &method),
                       now_ms);
      return;
    }
    send(number, amqp::ChannelFlowOk{true});
    return;
  }
  if (std::holds_alternative<amqp::AccessRequest>(method)) {
    send(number, amqp::AccessRequestOk{1});
    return;
  }
  if (amqp::method_class_id(method) == amqp::class_connection) {
    close_connection(
        error(ReplyCode::channel_error,
              std::string(amqp::method_name(method)) + " on channel " + std::to_string(number),
              &method),
        now_ms);
    return;
  }
  auto result = it->second->handle_method(method);
  if (!result.ok()) fail(number, result.error(), &method, now_ms);
}

void Connection::fail(uint16_t channel, ProtocolError e, const Method* method, uint64_t now_ms) {
  if (method != nullptr && e.class_id == 0 && e.method_id == 0) {
    e.class_id = amqp::method_class_id(*method);
    e.method_id = amqp::method_method_id(*method);
  }
  if (e.closes_connection()) {
    close_connection(e, now_ms);
  } else {
    close_channel(channel, e);
  }
}

void Connection::drop_channel(uint16_t number) {
  auto it = channels_.find(number);
  if (it == channels_.end()) return;
  std::unique_ptr<Channel> channel = std::move(it->second);
  channels_.erase(it);
  channel->release();
}

void Connection::send(uint16_t channel, const Method& method) {
  amqp::write_method_frame(output_, channel, method);
  wrote_output();
}

void Connection::send_content(uint16_t channel, const Method& method,
                              const amqp::BasicProperties& properties, std::string_view body) {
  amqp::write_method_frame(output_, channel, method);
  amqp::write_content_frames(output_, channel, properties,
                             {reinterpret_cast<const uint8_t*>(body.data()), body.size()},
                             frame_max_bytes_);
  wrote_output();
}

void Connection::set_bytes_in_flight(size_t bytes) {
  bytes_in_flight_ = bytes;
  if (consumers_suspended_ && output_backlog() < output_backlog_low_bytes) {
    consumers_suspended_ = false;
    for (auto& [number, channel] : channels_) channel->resume_consumers();
  }
}

void Connection::wrote_output() {
  if (!consumers_suspended_ && output_backlog() > output_backlog_high_bytes) {
    consumers_suspended_ = true;
    for (auto& [number, channel] : channels_) channel->suspend_consumers();
  }
  last_output_ms_ = now_ms_;
  if (output_listener_) output_listener_();
}

void Connection::close_connection(const ProtocolError& e, uint64_t now_ms) {
  if (state_ == State::closing || state_ == State::finished) return;
  send(0, amqp::ConnectionClose{static_cast<uint16_t>(e.code), e.reply_text(), e.class_id,
                                e.method_id});
  end_reason_ = e.reply_text();
  state_ = State::closing;
  close_deadline_ms_ = now_ms + config_.close_timeout_ms;
}

void Connection::close_channel(uint16_t channel, const ProtocolError& e) {
  HAMQ_VERIFY(channels_.contains(channel), "close_channel of a channel that is not open");
  drop_channel(channel);
  send(channel,
       amqp::ChannelClose{static_cast<uint16_t>(e.code), e.reply_text(), e.class_id, e.method_id});
  closing_channels_.insert(channel);
}

void Connection::shut_down(uint64_t now_ms) {
  now_ms_ = now_ms;
  if (state_ == State::open) {
    close_connection(error(ReplyCode::connection_forced,
                           "broker forced connection closure with reason 'shutdown'"),
                     now_ms);
  } else if (state_ != State::closing) {
    end("broker shut down");
  }
}

void Connection::close_by_peer() {
  std::vector<QueuePtr> owned;
  if (vhost_ != nullptr) {
    for (const auto& name : vhost_->queues_owned_by(id_)) {
      if (QueuePtr queue = vhost_->find_queue(name)) owned.push_back(std::move(queue));
    }
  }
  if (owned.empty()) {
    send(0, amqp::ConnectionCloseOk{});
    end("");
    return;
  }
  // No further frames are handled; close-ok goes out once every delete is decided.
  await_reply();
  auto pending = std::make_shared<size_t>(owned.size());
  auto deleted = [weak = std::weak_ptr<Connection*>(alive_), pending] {
    if (--*pending > 0) return;
    auto alive = weak.lock();
    if (!alive || *alive == nullptr) return;
    Connection& self = **alive;
    self.send(0, amqp::ConnectionCloseOk{});
    self.end("");
    self.wake();
  };
  for (const auto& queue : owned) broker_.propose_queue_delete(queue, deleted);
}

void Connection::end(std::string reason) {
  if (end_reason_.empty()) end_reason_ = std::move(reason);
  state_ = State::finished;
  release();
}

uint64_t Connection::next_timer_ms() const {
  switch (state_) {
    case State::finished:
      return never_ms;
    case State::closing:
      return close_deadline_ms_;
    case State::open:
      break;
    default:
      return handshake_deadline_ms_;
  }
  if (heartbeat_s_ == 0) return never_ms;
  uint64_t interval_ms = uint64_t{heartbeat_s_} * 1000;
  // While reading is paused the peer's silence is not counted (on_timer): only the heartbeats
  // this side owes are due (a deadline in the past would fire the timer without end).
  if (reading_paused()) return last_output_ms_ + interval_ms / 2;
  return std::min(last_output_ms_ + interval_ms / 2, last_input_ms_ + 2 * interval_ms);
}

void Connection::on_timer(uint64_t now_ms) {
  now_ms_ = now_ms;
  if (state_ == State::finished) return;
  if (state_ == State::closing) {
    if (now_ms >= close_deadline_ms_) end(end_reason_.empty() ? "close-ok not received" : "");
    return;
  }
  if (state_ != State::open) {
    if (now_ms >= handshake_deadline_ms_) end("handshake timed out");
    return;
  }
  if (heartbeat_s_ == 0) return;
  uint64_t interval_ms = uint64_t{heartbeat_s_} * 1000;
  if (reset_liveness_) {
    last_input_ms_ = now_ms;
    reset_liveness_ = false;
  }
  // RabbitMQ's rule (reference §3): the peer is dead after two intervals without a byte from it.
  if (!reading_paused() && now_ms >= last_input_ms_ + 2 * interval_ms) {
    end("missed heartbeats from client, timeout: " + std::to_string(heartbeat_s_) + "s");
    return;
  }
  // Anything sent since counts as a heartbeat (last_output_ms_ moves with every send).
  if (now_ms >= last_output_ms_ + interval_ms / 2) {
    amqp::write_heartbeat_frame(output_);
    last_output_ms_ = now_ms;
  }
}

}  // namespace hamq::broker
