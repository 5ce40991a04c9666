#include "server/management.h"

#include <spdlog/spdlog.h>

#include <array>
#include <chrono>

namespace hamq::server {

namespace {

// A client gets this long to send its request and read the answer.
constexpr auto exchange_timeout = std::chrono::seconds(10);

bool loopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

}  // namespace

// One connection: reads a request, answers it, closes.
class ManagementListener::Exchange : public std::enable_shared_from_this<Exchange> {
 public:
  Exchange(asio::ip::tcp::socket socket, Handler& handler, std::weak_ptr<bool> alive)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        handler_(handler),
        alive_(std::move(alive)) {}

  void start() {
    asio::error_code ec;
    auto peer = socket_.remote_endpoint(ec);
    from_loopback_ = !ec && loopback(peer.address());
    timer_.expires_after(exchange_timeout);
    timer_.async_wait([self = shared_from_this()](asio::error_code wait_error) {
      if (!wait_error) self->close();
    });
    read();
  }

 private:
  void read() {
    socket_.async_read_some(
        asio::buffer(buffer_), [self = shared_from_this()](asio::error_code ec, size_t bytes) {
          if (ec) return self->close();
          self->parser_.append({self->buffer_.data(), bytes});
          auto next = self->parser_.next();
          if (!next.ok()) {
            HttpResponse refused;
            refused.status = next.error().status;
            refused.content_type = "text/plain";
            refused.body = next.error().reason + "\n";
            return self->respond(refused);
          }
          if (!next.value()) return self->read();
          if (self->alive_.expired()) return self->close();
          self->handler_(*next.value(), self->from_loopback_,
                         [self](const HttpResponse& response) { self->respond(response); });
        });
  }

  void respond(const HttpResponse& response) {
    if (responded_) return;
    responded_ = true;
    output_ = encode_response(response);
    asio::async_write(
        socket_, asio::buffer(output_),
        [self = shared_from_this(), after = response.after_sent](asio::error_code, size_t) {
          self->close();
          if (after) after();
        });
  }

  void close() {
    asio::error_code ignored;
    timer_.cancel();
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  Handler& handler_;
  std::weak_ptr<bool> alive_;
  bool from_loopback_ = false;
  bool responded_ = false;
  HttpRequestParser parser_;
  std::array<uint8_t, 8192> buffer_{};
  std::string output_;
};

ManagementListener::ManagementListener(asio::io_context& io, Handler handler)
    : handler_(std::move(handler)), acceptor_(io) {}

ManagementListener::~ManagementListener() {
  stop();
}

Result<void, std::string> ManagementListener::start(const std::string& bind_address,
                                                    uint16_t port) {
  asio::error_code ec;
  auto address = asio::ip::make_address(bind_address, ec);
  if (ec) return unexpected("bad bind address '" + bind_address + "'");
  asio::ip::tcp::endpoint endpoint(address, port);
  if (acceptor_.open(endpoint.protocol(), ec)) {
    return unexpected("cannot open the management socket: " + ec.message());
  }
  if (address.is_v6()) acceptor_.set_option(asio::ip::v6_only(false), ec);
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (acceptor_.bind(endpoint, ec) || acceptor_.listen(64, ec)) {
    return unexpected("cannot listen for management on " + bind_address + " port " +
                      std::to_string(port) + ": " + ec.message());
  }
  accept();
  return Ok{};
}

uint16_t ManagementListener::port() const {
  asio::error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void ManagementListener::stop() {
  *alive_ = false;
  alive_ = std::make_shared<bool>(false);
  asio::error_code ignored;
  acceptor_.close(ignored);
}

void ManagementListener::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<bool>(alive_)](asio::error_code ec,
                                                                     asio::ip::tcp::socket socket) {
    auto still = alive.lock();
    if (!still || !*still) return;
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        spdlog::warn("management accept failed: {}", ec.message());
        accept();
      }
      return;
    }
    std::make_shared<Exchange>(std::move(socket), handler_, alive)->start();
    accept();
  });
}

HttpResponse error_response(int status, const std::string& reason) {
  HttpResponse response;
  response.status = status;
  response.body =
      nlohmann::json{{"error", std::string(status_text(status))}, {"reason", reason}}.dump() + "\n";
  return response;
}

HttpResponse json_response(const nlohmann::json& body) {
  HttpResponse response;
  response.body = body.dump() + "\n";
  return response;
}

}  // namespace hamq::server
