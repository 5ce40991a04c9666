// The management listener (--management-port, default 15672, on the --bind address): HTTP/1.1,
// one request per connection, answered by the handler the server gives. hamqctl talks to it
// (tools/hamqctl); the management API of the operations issue grows here.
//
// Thread: the event loop's; the handler runs on it.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "common/result.h"
#include "server/http.h"

namespace hamq::server {

class ManagementListener {
 public:
  // `from_loopback`: the client connected from a loopback address. The handler answers through
  // `respond`, at once or later (a request that waits for the cluster).
  using Respond = std::function<void(const HttpResponse&)>;
  using Handler =
      std::function<void(const HttpRequest& request, bool from_loopback, Respond respond)>;
  ManagementListener(asio::io_context& io, Handler handler);
  ~ManagementListener();
  ManagementListener(const ManagementListener&) = delete;
  ManagementListener& operator=(const ManagementListener&) = delete;

  Result<void, std::string> start(const std::string& bind_address, uint16_t port);
  uint16_t port() const;
  void stop();

 private:
  class Exchange;
  void accept();

  Handler handler_;
  asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// An answer with a JSON body: {"error": the status's text, "reason": `reason`}.
HttpResponse error_response(int status, const std::string& reason);
// A 200 answer with `body`.
HttpResponse json_response(const nlohmann::json& body);

}  // namespace hamq::server
