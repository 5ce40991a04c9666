#include "server/http.h"

#include <gtest/gtest.h>

namespace hamq::server {
namespace {

std::span<const uint8_t> bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

TEST(HttpRequestParser, ARequestArrivesInPiecesWithItsHeadersAndBody) {
  std::string text =
      "POST /api/queues/%2F/work?columns=name HTTP/1.1\r\nHost: n1\r\nContent-Length: 5\r\n"
      "X-Two: a\r\nx-two: b\r\n\r\nhello";
  HttpRequestParser parser;
  for (size_t i = 0; i + 1 < text.size(); ++i) {
    parser.append(bytes(text.substr(i, 1)));
    auto next = parser.next();
    ASSERT_TRUE(next.ok());
    ASSERT_FALSE(next.value().has_value()) << "complete at byte " << i;
  }
  parser.append(bytes(text.substr(text.size() - 1)));
  auto next = parser.next();
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next.value().has_value());
  const HttpRequest& request = *next.value();
  EXPECT_EQ(request.method, "POST");
  EXPECT_EQ(request.path, "/api/queues///work");
  EXPECT_EQ(request.query, "columns=name");
  EXPECT_EQ(*request.header("host"), "n1");
  EXPECT_EQ(*request.header("x-two"), "a, b");
  EXPECT_EQ(request.body, "hello");
}

TEST(HttpRequestParser, BadRequestsAreRefusedWithTheirStatusAndStayRefused) {
  struct Case {
    std::string text;
    int status;
  };
  for (const Case& bad : std::vector<Case>{
           {"GET\r\n\r\n", 400},
           {"GET /x HTTP/2.0\r\n\r\n", 505},
           {"GET x HTTP/1.1\r\n\r\n", 400},
           {"GET /%zz HTTP/1.1\r\n\r\n", 400},
           {"GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400},
           {"GET /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
           {"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
           {"POST /x HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413},
           {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
           {"GET /" + std::string(http_head_bytes_max, 'a'), 431},
       }) {
    HttpRequestParser parser;
    parser.append(bytes(bad.text));
    auto next = parser.next();
    ASSERT_FALSE(next.ok()) << bad.text.substr(0, 60);
    EXPECT_EQ(next.error().status, bad.status) << bad.text.substr(0, 60);
    EXPECT_FALSE(parser.next().ok());
  }
}

TEST(HttpRequestParser, BasicCredentialsAreDecodedAndMalformedOnesRefused) {
  HttpRequest request;
  request.headers["authorization"] = "Basic Z3Vlc3Q6Z3Vlc3Q=";  // guest:guest
  auto credentials = basic_credentials(request);
  ASSERT_TRUE(credentials.has_value());
  EXPECT_EQ(credentials->first, "guest");
  EXPECT_EQ(credentials->second, "guest");
  for (const char* bad : {"Basic Z3Vlc3Q=", "Basic !!!!", "Bearer abc", "Basic Z3V"}) {
    request.headers["authorization"] = bad;
    EXPECT_FALSE(basic_credentials(request).has_value()) << bad;
  }
}

TEST(HttpResponse, IsEncodedWithItsLengthAndCloses) {
  HttpResponse response{.status = 404,
                        .content_type = "text/plain",
                        .body = "gone\n",
                        .headers = {},
                        .after_sent = {}};
  EXPECT_EQ(encode_response(response),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
            "Connection: close\r\n\r\ngone\n");
}

}  // namespace
}  // namespace hamq::server
