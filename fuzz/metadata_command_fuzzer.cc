// The metadata group's log entries (broker/definitions.h): decode arbitrary bytes; what decodes
// must re-encode stably and apply to definitions, whose snapshot must restore them exactly.
#include <cstddef>
#include <cstdint>

#include "broker/definitions.h"
#include "common/verify.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace hamq::broker;
  auto decoded = decode_metadata_command({reinterpret_cast<const char*>(data), size});
  if (!decoded.ok()) return 0;
  std::string encoded = encode_metadata_command(*decoded);
  auto again = decode_metadata_command(encoded);
  HAMQ_VERIFY(again.ok() && encode_metadata_command(*again) == encoded, "unstable encoding");
  Definitions definitions;
  definitions.apply(DeclareExchange{{"/", "x", "topic", false, false, {}}});
  definitions.apply(*decoded);
  // Compared as bytes: a NaN among the arguments is not equal to itself.
  std::string snapshot = definitions.snapshot();
  auto restored = Definitions::from_snapshot(snapshot);
  HAMQ_VERIFY(restored.ok() && restored->snapshot() == snapshot, "snapshot does not restore");
  return 0;
}
