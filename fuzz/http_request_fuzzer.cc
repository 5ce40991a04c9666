// The management listener's HTTP request parser (server/http.h): arbitrary bytes, fed in two
// pieces; whatever parses must be a request the server can act on (a path from '/', a body of its
// stated length), and a failure must stay a failure.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/verify.h"
#include "server/http.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hamq::server;
  HttpRequestParser parser;
  size_t split = size == 0 ? 0 : data[0] % (size + 1);
  parser.append({data, split});
  bool failed = false;
  for (int round = 0; round < 2; ++round) {
    if (round == 1) parser.append({data + split, size - split});
    for (;;) {
      auto next = parser.next();
      if (!next.ok()) {
        failed = true;
        HAMQ_VERIFY(next.error().status >= 400, "an error without an error status");
        break;
      }
      HAMQ_VERIFY(!failed, "a failed parser parsed again");
      if (!next.value()) break;
      const HttpRequest& request = *next.value();
      HAMQ_VERIFY(!request.method.empty(), "a request without a method");
      HAMQ_VERIFY(request.body.size() <= http_body_bytes_max, "a body past its bound");
      if (const std::string* length = request.header("content-length")) {
        // (Leading zeros are allowed: "007" is 7.)
        HAMQ_VERIFY(request.body.size() == std::stoul(*length), "a body of another length");
      }
      (void)basic_credentials(request);
    }
    if (failed) break;
  }
  return 0;
}
