#include "server/http.h"

#include <algorithm>
#include <cctype>

namespace hamq::server {

namespace {

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text) {
    if (c <= 32 || c >= 127 || std::string_view("()<>@,;:\\\"/[]?={}").find(c) != text.npos) {
      return false;
    }
  }
  return true;
}

std::optional<std::string> percent_decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size() || !std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16)));
    i += 2;
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else if (pad > 0 || (v[k] = value(c)) < 0) {
        return std::nullopt;
      }
    }
    uint32_t n = static_cast<uint32_t>(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
    out.push_back(static_cast<char>(n >> 16));
    if (pad < 2) out.push_back(static_cast<char>(n >> 8 & 0xff));
    if (pad < 1) out.push_back(static_cast<char>(n & 0xff));
  }
  return out;
}

}  // namespace

const std::string* HttpRequest::header(const std::string& lower_name) const {
  auto it = headers.find(lower_name);
  return it == headers.end() ? nullptr : &it->second;
}

void HttpRequestParser::append(std::span<const uint8_t> bytes) {
  if (failure_) return;
  buffer_.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

Result<std::optional<HttpRequest>, HttpError> HttpRequestParser::next() {
  if (failure_) return unexpected(*failure_);
  auto fail = [this](int status, std::string reason) {
    failure_ = HttpError{status, std::move(reason)};
    return unexpected(*failure_);
  };
  size_t head_end = buffer_.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    if (buffer_.size() > http_head_bytes_max) return fail(431, "request head too large");
    return std::optional<HttpRequest>();
  }
  if (head_end > http_head_bytes_max) return fail(431, "request head too large");
  std::string_view head(buffer_.data(), head_end);
  HttpRequest request;
  size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  size_t first = line.find(' ');
  size_t last = line.rfind(' ');
  if (first == std::string_view::npos || first == last) return fail(400, "bad request line");
  request.method = std::string(line.substr(0, first));
  std::string_view target = line.substr(first + 1, last - first - 1);
  std::string_view version = line.substr(last + 1);
  if (!is_token(request.method)) return fail(400, "bad method");
  if (version != "HTTP/1.1" && version != "HTTP/1.0")
    return fail(505, "HTTP version not supported");
  if (target.empty() || target.front() != '/') return fail(400, "bad request target");
  size_t question = target.find('?');
  auto path = percent_decode(target.substr(0, question));
  if (!path) return fail(400, "bad percent-encoding");
  request.path = std::move(*path);
  if (question != std::string_view::npos) request.query = std::string(target.substr(question + 1));
  std::string_view rest = line_end == std::string_view::npos ? "" : head.substr(line_end + 2);
  while (!rest.empty()) {
    size_t end = rest.find("\r\n");
    std::string_view header = rest.substr(0, end);
    rest = end == std::string_view::npos ? "" : rest.substr(end + 2);
    size_t colon = header.find(':');
    if (colon == std::string_view::npos || !is_token(header.substr(0, colon))) {
      return fail(400, "bad header line");
    }
    std::string name = lower(header.substr(0, colon));
    std::string value(trim(header.substr(colon + 1)));
    if (request.headers.contains(name)) {
      if (name == "content-length" || name == "host") return fail(400, "repeated " + name);
      request.headers[name] += ", " + value;
    } else {
      request.headers.emplace(std::move(name), std::move(value));
    }
  }
  if (request.header("transfer-encoding") != nullptr) return fail(501, "chunked bodies");
  size_t body_bytes = 0;
  if (const std::string* length = request.header("content-length")) {
    if (length->empty() || length->size() > 9 ||
        !std::all_of(length->begin(), length->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return fail(400, "bad content-length");
    }
    body_bytes = std::stoul(*length);
    if (body_bytes > http_body_bytes_max) return fail(413, "body too large");
  }
  size_t total = head_end + 4 + body_bytes;
  if (buffer_.size() < total) return std::optional<HttpRequest>();
  request.body = buffer_.substr(head_end + 4, body_bytes);
  buffer_.erase(0, total);
  return std::optional<HttpRequest>(std::move(request));
}

std::string_view status_text(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 409:
      return "Conflict";
    case 413:
      return "Payload Too Large";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

std::string encode_response(const HttpResponse& response) {
  std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " +
                    std::string(status_text(response.status)) + "\r\n";
  out += "Content-Type: " + response.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
  for (const auto& [name, value] : response.headers) out += name + ": " + value + "\r\n";
  out += "Connection: close\r\n\r\n";
  out += response.body;
  return out;
}

std::optional<std::pair<std::string, std::string>> basic_credentials(const HttpRequest& request) {
  const std::string* authorization = request.header("authorization");
  if (authorization == nullptr) return std::nullopt;
  std::string_view value(*authorization);
  if (value.size() < 6 || lower(value.substr(0, 6)) != "basic ") return std::nullopt;
  auto decoded = base64_decode(trim(value.substr(6)));
  if (!decoded) return std::nullopt;
  size_t colon = decoded->find(':');
  if (colon == std::string::npos) return std::nullopt;
  return std::make_pair(decoded->substr(0, colon), decoded->substr(colon + 1));
}

}  // namespace hamq::server
