// A small HTTP/1.1 server side for the management listener (server/management.h): requests are
// parsed incrementally from the bytes a connection reads, responses encoded whole. Only what the
// management API needs: a request line, headers, and a body of Content-Length bytes (no chunked
// bodies, no pipelining beyond one request at a time).
//
// The parser never trusts its input (fuzz/http_request_fuzzer.cc): a request line, header or body
// past its bound, a malformed line or a body without a length is an error, answered 400 (or 413
// for a body too large) and the connection closed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "common/result.h"

namespace hamq::server {

inline constexpr size_t http_head_bytes_max = 16 << 10;  // request line and headers
inline constexpr size_t http_body_bytes_max = 1 << 20;

struct HttpRequest {
  std::string method;                          // "GET", "POST", ...
  std::string path;                            // the target's path, percent-decoded
  std::string query;                           // after '?', as sent
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  const std::string* header(const std::string& lower_name) const;
};

struct HttpError {
  int status = 400;
  std::string reason;
};

class HttpRequestParser {
 public:
  void append(std::span<const uint8_t> bytes);
  // The next whole request, nothing while it is incomplete, or why the input is bad (the parser
  // stays failed).
  Result<std::optional<HttpRequest>, HttpError> next();

 private:
  std::string buffer_;
  std::optional<HttpError> failure_;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::map<std::string, std::string> headers;  // extra ones (WWW-Authenticate, ...)
  std::function<void()> after_sent;            // runs once the response is written (or failed)
};

std::string encode_response(const HttpResponse& response);
std::string_view status_text(int status);
// The user and password of an "Authorization: Basic ..." header; nothing if absent or malformed.
std::optional<std::pair<std::string, std::string>> basic_credentials(const HttpRequest& request);

}  // namespace hamq::server
