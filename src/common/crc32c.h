// CRC-32C (Castagnoli), the checksum of every record the storage engine writes and
// of every frame between nodes.
//
// Chosen over CRC-32 for its hardware instruction (SSE4.2 `crc32`, used when the CPU has it,
// checked at run time) and its better error detection on storage data; the same polynomial as
// iSCSI, ext4 metadata and leveldb. Both paths give identical results (tested).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hamq {

// Extends `crc` (the value of the bytes before) with `size` bytes. crc32c_extend(0, ...) is the
// CRC of the data alone.
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(const void* data, size_t size) {
  return crc32c_extend(0, data, size);
}
inline uint32_t crc32c(std::string_view data) {
  return crc32c(data.data(), data.size());
}

// The table path alone, for tests that compare it with the hardware path.
uint32_t crc32c_extend_portable(uint32_t crc, const void* data, size_t size);

}  // namespace hamq
