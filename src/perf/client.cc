#include "perf/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace hamq::perf {

namespace {

constexpr size_t read_chunk_bytes = 256 * 1024;

std::string describe_close(const amqp::Method& method) {
  if (auto* c = std::get_if<amqp::ConnectionClose>(&method)) {
    return "connection closed by the broker: " + std::to_string(c->reply_code) + " " +
           c->reply_text;
  }
  if (auto* c = std::get_if<amqp::ChannelClose>(&method)) {
    return "channel closed by the broker: " + std::to_string(c->reply_code) + " " + c->reply_text;
  }
  return "";
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Result<Endpoint, std::string> parse_uri(std::string_view uri) {
  Endpoint endpoint;
  constexpr std::string_view scheme = "amqp://";
  if (!uri.starts_with(scheme)) return unexpected(std::string("URI must start with amqp://"));
  uri.remove_prefix(scheme.size());
  size_t slash = uri.find('/');
  std::string_view authority = uri.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view vhost = uri.substr(slash + 1);
    endpoint.virtual_host = vhost.empty() ? "/" : std::string(vhost == "%2F" ? "/" : vhost);
  }
  size_t at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view credentials = authority.substr(0, at);
    authority.remove_prefix(at + 1);
    size_t colon = credentials.find(':');
    endpoint.user = std::string(credentials.substr(0, colon));
    if (colon != std::string_view::npos)
      endpoint.password = std::string(credentials.substr(colon + 1));
  }
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos) {
    std::string port(authority.substr(colon + 1));
    char* end = nullptr;
    long value = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || value <= 0 || value > 65535) {
      return unexpected("bad port in URI: '" + port + "'");
    }
    endpoint.port = static_cast<uint16_t>(value);
    authority = authority.substr(0, colon);
  }
  if (!authority.empty()) endpoint.host = std::string(authority);
  return endpoint;
}

AmqpClient::~AmqpClient() {
  close();
}

void AmqpClient::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

Result<void, std::string> AmqpClient::open(const Endpoint& endpoint) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* addresses = nullptr;
  std::string port = std::to_string(endpoint.port);
  if (int rc = ::getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &addresses); rc != 0) {
    return unexpected("cannot resolve " + endpoint.host + ": " + gai_strerror(rc));
  }
  for (addrinfo* a = addresses; a != nullptr && fd_ < 0; a = a->ai_next) {
    int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
      fd_ = fd;
    } else {
      ::close(fd);
    }
  }
  ::freeaddrinfo(addresses);
  if (fd_ < 0) {
    return unexpected("cannot connect to " + endpoint.host + ":" + port + ": " +
                      std::strerror(errno));
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  auto header = amqp::protocol_header_0_9_1;
  output_.insert(output_.end(), header.begin(), header.end());
  if (auto sent = flush(true); !sent.ok()) return sent;
  auto start = next_method(10'000);
  if (!start.ok()) return unexpected(start.error());
  if (!std::holds_alternative<amqp::ConnectionStart>(start.value())) {
    return unexpected(std::string("expected connection.start"));
  }
  amqp::ConnectionStartOk start_ok;
  amqp::FieldTable capabilities;
  capabilities.entries.emplace_back("publisher_confirms", true);
  capabilities.entries.emplace_back("consumer_cancel_notify", true);
  capabilities.entries.emplace_back("authentication_failure_close", true);
  start_ok.client_properties.entries.emplace_back("product", "hamq-perf");
  start_ok.client_properties.entries.emplace_back("capabilities", capabilities);
  start_ok.mechanism = "PLAIN";
  start_ok.response = std::string(1, '\0') + endpoint.user + '\0' + endpoint.password;
  // The handshake is on channel 0; send() is for channel 1.
  amqp::write_method_frame(output_, 0, start_ok);
  if (auto sent = flush(true); !sent.ok()) return sent;
  auto tune = next_method(10'000);
  if (!tune.ok()) return unexpected(tune.error());
  auto* t = std::get_if<amqp::ConnectionTune>(&tune.value());
  if (t == nullptr) return unexpected(std::string("login refused"));
  frame_max_bytes_ = t->frame_max == 0 ? 131072 : std::min<uint32_t>(t->frame_max, 131072);
  amqp::write_method_frame(output_, 0, amqp::ConnectionTuneOk{t->channel_max, frame_max_bytes_, 0});
  amqp::write_method_frame(output_, 0, amqp::ConnectionOpen{endpoint.virtual_host, "", false});
  if (auto sent = flush(true); !sent.ok()) return sent;
  auto open_ok = next_method(10'000);
  if (!open_ok.ok()) return unexpected(open_ok.error());
  if (!std::holds_alternative<amqp::ConnectionOpenOk>(open_ok.value())) {
    return unexpected(describe_close(open_ok.value()));
  }
  auto channel = call(amqp::ChannelOpen{});
  if (!channel.ok()) return unexpected(channel.error());
  return Ok{};
}

void AmqpClient::send(const amqp::Method& method) {
  amqp::write_method_frame(output_, 1, method);
}

void AmqpClient::publish(const std::string& exchange, const std::string& routing_key,
                         const amqp::BasicProperties& properties, std::string_view body,
                         bool mandatory) {
  amqp::write_method_frame(output_, 1,
                           amqp::BasicPublish{0, exchange, routing_key, mandatory, false});
  amqp::write_content_frames(output_, 1, properties,
                             {reinterpret_cast<const uint8_t*>(body.data()), body.size()},
                             frame_max_bytes_);
}

Result<void, std::string> AmqpClient::flush(bool wait) {
  while (output_sent_ < output_.size()) {
    ssize_t n = ::send(fd_, output_.data() + output_sent_, output_.size() - output_sent_,
                       MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (!wait && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      return unexpected(std::string("send failed: ") + std::strerror(errno));
    }
    output_sent_ += static_cast<size_t>(n);
  }
  if (output_sent_ == output_.size()) {
    output_.clear();
    output_sent_ = 0;
  } else if (output_sent_ > (1u << 20)) {
    output_.erase(output_.begin(), output_.begin() + static_cast<ptrdiff_t>(output_sent_));
    output_sent_ = 0;
  }
  return Ok{};
}

Result<void, std::string> AmqpClient::read_some(int timeout_ms) {
  pollfd p{fd_, static_cast<short>(POLLIN | (buffered_output() > 0 ? POLLOUT : 0)), 0};
  int ready = ::poll(&p, 1, timeout_ms);
  if (ready < 0 && errno != EINTR) return unexpected(std::string("poll: ") + std::strerror(errno));
  if (ready <= 0) return Ok{};
  if ((p.revents & POLLOUT) != 0) {
    if (auto sent = flush(false); !sent.ok()) return sent;
  }
  if ((p.revents & (POLLIN | POLLHUP | POLLERR)) == 0) return Ok{};
  auto space = reader_.prepare(read_chunk_bytes);
  ssize_t n = ::recv(fd_, space.data(), space.size(), MSG_DONTWAIT);
  if (n == 0) return unexpected(std::string("the broker closed the connection"));
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return Ok{};
    return unexpected(std::string("recv failed: ") + std::strerror(errno));
  }
  reader_.commit(static_cast<size_t>(n));
  return Ok{};
}

Result<amqp::Method, std::string> AmqpClient::next_method(int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    auto next = reader_.next();
    if (!next.ok()) return unexpected(next.error().reply_text());
    if (next.value()) {
      if (next.value()->type != amqp::FrameType::method) continue;
      auto method = amqp::decode_method(next.value()->payload);
      if (!method.ok()) return unexpected(method.error().reply_text());
      return method.value();
    }
    int64_t left = deadline - now_ms();
    if (left <= 0) return unexpected(std::string("timed out waiting for the broker"));
    if (auto read = read_some(static_cast<int>(left)); !read.ok()) return unexpected(read.error());
  }
}

Result<amqp::Method, std::string> AmqpClient::call(const amqp::Method& method, int timeout_ms) {
  send(method);
  if (auto sent = flush(true); !sent.ok()) return unexpected(sent.error());
  auto reply = next_method(timeout_ms);
  if (!reply.ok()) return reply;
  std::string closed = describe_close(reply.value());
  if (!closed.empty()) return unexpected(closed);
  return reply;
}

Result<void, std::string> AmqpClient::poll(
    int timeout_ms, const std::function<void(const amqp::Method&)>& on_method,
    const std::function<void(Message&)>& on_message) {
  if (auto read = read_some(timeout_ms); !read.ok()) return read;
  for (;;) {
    auto next = reader_.next();
    if (!next.ok()) return unexpected(next.error().reply_text());
    if (!next.value()) return Ok{};
    if (auto handled = handle_frame(*next.value(), on_method, on_message); !handled.ok()) {
      return handled;
    }
  }
}

Result<void, std::string> AmqpClient::handle_frame(
    const amqp::Frame& frame, const std::function<void(const amqp::Method&)>& on_method,
    const std::function<void(Message&)>& on_message) {
  switch (frame.type) {
    case amqp::FrameType::heartbeat:
      return Ok{};
    case amqp::FrameType::method: {
      auto method = amqp::decode_method(frame.payload);
      if (!method.ok()) return unexpected(method.error().reply_text());
      std::string closed = describe_close(method.value());
      if (!closed.empty()) return unexpected(closed);
      if (amqp::method_has_content(method.value())) {
        assembling_ = Message{std::move(method.value()), {}, {}};
        body_size_.reset();
      } else {
        on_method(method.value());
      }
      return Ok{};
    }
    case amqp::FrameType::header: {
      if (!assembling_) return unexpected(std::string("content header without a method"));
      auto header = amqp::decode_content_header(frame.payload);
      if (!header.ok()) return unexpected(header.error().reply_text());
      assembling_->properties = std::move(header->properties);
      body_size_ = header->body_size;
      break;
    }
    case amqp::FrameType::body:
      if (!assembling_ || !body_size_) return unexpected(std::string("body without a header"));
      assembling_->body.append(reinterpret_cast<const char*>(frame.payload.data()),
                               frame.payload.size());
      break;
  }
  if (assembling_ && body_size_ && assembling_->body.size() >= *body_size_) {
    Message message = std::move(*assembling_);
    assembling_.reset();
    body_size_.reset();
    on_message(message);
  }
  return Ok{};
}

}  // namespace hamq::perf
