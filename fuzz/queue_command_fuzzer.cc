// Replicated-queue log entries (queue/command.h): decode arbitrary bytes; what decodes must encode
// to something that decodes to the same encoding again, and applying it to a queue must not fail.
// The same bytes are decoded as a relay's answer (decode_relayed), with the same round trip.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/verify.h"
#include "queue/command.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hamq::queue;
  if (auto relayed = decode_relayed({reinterpret_cast<const char*>(data), size}); relayed.ok()) {
    std::string encoded = encode_relayed(*relayed);
    auto again = decode_relayed(encoded);
    HAMQ_VERIFY(again.ok(), "encoded relayed effects do not decode");
    HAMQ_VERIFY(encode_relayed(*again) == encoded, "relayed effects encoding is not stable");
  }
  auto decoded = decode_command({reinterpret_cast<const char*>(data), size});
  if (!decoded.ok()) return 0;
  std::string encoded = encode_command(*decoded);
  auto again = decode_command(encoded);
  HAMQ_VERIFY(again.ok(), "an encoded command does not decode");
  HAMQ_VERIFY(encode_command(*again) == encoded, "encoding is not stable");
  QueueMachine machine({.max_priority = 5,
                        .max_length = 10,
                        .dead_letters = true,
                        .message_ttl_ms = 100,
                        .delivery_limit = 1});
  // A consumer and a message first, so that settle, get and detach commands find something.
  auto message = std::make_shared<Message>();
  message->body = "seed";
  std::vector<Delivery> deliveries;
  machine.enqueue(message, 0, deliveries);
  machine.attach(HolderId{1}, {}, 0, deliveries);
  apply_command(machine, *decoded);
  apply_command(machine, *again);
  return 0;
}
