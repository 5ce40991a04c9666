#include "common/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace hamq {
namespace {

constexpr uint32_t reflected_polynomial = 0x82F63B78;

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
struct Tables {
  std::array<std::array<uint32_t, 256>, 8> table{};
  constexpr Tables() {
    for (uint32_t byte = 0; byte < 256; ++byte) {
      uint32_t crc = byte;
      for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? reflected_polynomial : 0);
      table[0][byte] = crc;
    }
    for (uint32_t byte = 0; byte < 256; ++byte) {
      for (size_t k = 1; k < 8; ++k) {
        table[k][byte] = (table[k - 1][byte] >> 8) ^ table[0][table[k - 1][byte] & 0xFF];
      }
    }
  }
};
constexpr Tables tables;

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t extend_hardware(uint32_t crc, const uint8_t* data,
                                                           size_t size) {
  uint64_t state = ~crc;
  while (size >= 8) {
    uint64_t word;
    std::memcpy(&word, data, 8);
    state = _mm_crc32_u64(state, word);
    data += 8;
    size -= 8;
  }
  auto small = static_cast<uint32_t>(state);
  while (size > 0) {
    small = _mm_crc32_u8(small, *data);
    ++data;
    --size;
  }
  return ~small;
}

bool cpu_has_sse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#endif

}  // namespace

uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t size) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint32_t state = ~crc;
  while (size >= 8) {
    uint32_t low;
    uint32_t high;
    std::memcpy(&low, bytes, 4);
    std::memcpy(&high, bytes + 4, 4);
    low ^= state;  // little-endian hosts only (the engine's formats are little-endian too)
    state = tables.table[7][low & 0xFF] ^ tables.table[6][(low >> 8) & 0xFF] ^
            tables.table[5][(low >> 16) & 0xFF] ^ tables.table[4][low >> 24] ^
            tables.table[3][high & 0xFF] ^ tables.table[2][(high >> 8) & 0xFF] ^
            tables.table[1][(high >> 16) & 0xFF] ^ tables.table[0][high >> 24];
    bytes += 8;
    size -= 8;
  }
  while (size > 0) {
    state = (state >> 8) ^ tables.table[0][(state ^ *bytes) & 0xFF];
    ++bytes;
    --size;
  }
  return ~state;
}

uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size) {
#if defined(__x86_64__)
  if (cpu_has_sse42()) return extend_hardware(crc, static_cast<const uint8_t*>(data), size);
#endif
  return crc32c_extend_portable(crc, data, size);
}

}  // namespace hamq
