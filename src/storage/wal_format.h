// The write-ahead log's on-disk format as constants, shared by the writer, the reader, the
// recovery and hamq-dump. The format is described in docs/formats/wal.md; change both together.
//
// All integers are little-endian. Every structure carries a CRC-32C.
#pragma once

#include <cstdint>

namespace hamq::storage::wal_format {

// Segment file names: "wal-" + 16 lowercase hex digits of the segment sequence + ".seg".
inline constexpr char segment_prefix[] = "wal-";
inline constexpr char segment_suffix[] = ".seg";

// Segment header, at offset 0 of every segment:
//   magic u64 | version u32 | reserved u32 (0) | segment sequence u64 | crc u32 | reserved u32 (0)
// crc covers bytes [0, 24).
inline constexpr uint64_t segment_magic = 0x314C4157514D4148;  // "HAMQWAL1"
inline constexpr uint32_t format_version = 1;
inline constexpr uint64_t segment_header_bytes = 32;

// Batch header, before the records of one group-commit write:
//   magic u32 | crc u32 | batch sequence u64 | body size u32 | record count u32 |
//   segment sequence u64
// crc covers bytes [8, 32). Batch sequences increase by one across segments, from 1.
inline constexpr uint32_t batch_magic = 0x54414248;  // "HBAT"
inline constexpr uint64_t batch_header_bytes = 32;

// Record header, before each record's body:
//   header crc u32 | body crc u32 | body size u32 | type u8 | reserved u8[3] (0) | group u64
// header crc covers bytes [4, 24); body crc covers the body.
inline constexpr uint64_t record_header_bytes = 24;

enum class RecordType : uint8_t {
  // body: index u64 | term u64 | kind u8 | payload
  entry = 1,
  // body: term u64 | vote u64 | commit u64
  hard_state = 2,
  // body: index u64 | term u64 | mode u8 | data; mode 2 (compact_retaining):
  //   index u64 | term u64 | mode u8 | retain_from u64 | data
  snapshot = 3,
  // body: empty. The group and everything it stored are gone.
  group_removed = 4,
  // group 0; body: first live segment u64. Segments below it are free to delete.
  release = 5,
  // group 0; the index of a sealed segment, in a batch of its own just before the seal:
  //   first batch sequence u64 | row count u32 | reserved u32 (0) | rows
  // One 48-byte row per record of the segment before it, in order:
  //   type u8 | mode u8 | reserved u16 (0) | offset u32 | size u32 | reserved u32 (0) |
  //   group u64 | a u64 | b u64 | c u64
  // where a, b, c are: entry: index, term, 0; hard_state: term, vote, commit; snapshot: index,
  // term, retain_from (0 unless mode 2; mode in the mode byte); release: first live segment,
  // 0, 0; group_removed: 0, 0, 0.
  segment_index = 6,
  // group 0; body: offset u64 of the index batch. The last batch of a sealed segment, exactly
  // seal_batch_bytes at its very end: recovery reads it and the index instead of the segment.
  segment_seal = 7,
};
inline constexpr uint8_t record_type_max = 7;

inline constexpr uint64_t entry_body_fixed_bytes = 17;
inline constexpr uint64_t hard_state_body_bytes = 24;
inline constexpr uint64_t snapshot_body_fixed_bytes = 17;
inline constexpr uint64_t snapshot_retain_from_bytes = 8;  // after the fixed part, in mode 2
inline constexpr uint64_t release_body_bytes = 8;
inline constexpr uint64_t segment_index_fixed_bytes = 16;
inline constexpr uint64_t segment_index_row_bytes = 48;
inline constexpr uint64_t seal_body_bytes = 8;
inline constexpr uint64_t seal_batch_bytes = batch_header_bytes + record_header_bytes + 8;

// The largest record body the engine writes or accepts: bounds every read a length field can
// ask for. An entry holds one message whole: 512 MiB of body (AMQP's and RabbitMQ's ceiling on
// max_message_size) and room for its properties.
inline constexpr uint64_t record_body_bytes_max = 576ull << 20;
// The largest batch body: bounds a group-commit write (and the memory a batch takes). Batches
// stop at pending_bytes_max; only a single large record makes one this large.
inline constexpr uint64_t batch_body_bytes_max = 1ull << 30;

}  // namespace hamq::storage::wal_format
