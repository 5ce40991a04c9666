// hamq-dump: prints the records of a storage data directory, for debugging.
//
//   hamq-dump DIR            every segment: batches and records, one line each
//   hamq-dump DIR --group N  only the records of group N
//   hamq-dump DIR --payloads also print entry payloads and snapshot data (escaped, up to 64 bytes)
//
// It reads the files as they are (it never writes, never cuts a torn tail) and reports damage
// where the scan stops, so it can look at a directory that Wal::open refuses. Exits 1 when any
// damage was found.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "storage/file_system.h"
#include "storage/record.h"

namespace hamq::storage {
namespace {

std::string escaped(std::string_view bytes, size_t limit) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < limit; ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  if (bytes.size() > limit) out += "...";
  return out;
}

void print_record(const ScannedRecord& record, bool payloads) {
  std::printf("  record @%" PRIu64 " %s group=%" PRIu64 " body=%u%s", record.offset,
              std::string(record_type_name(record.header.type)).c_str(), record.header.group.value,
              record.header.body_size_bytes, record.body_ok ? "" : " CHECKSUM-MISMATCH");
  if (record.body_ok) {
    switch (record.header.type) {
      case RecordType::entry: {
        EntryBody entry;
        (void)decode_entry_body(record.body, entry);
        std::printf(" index=%" PRIu64 " term=%" PRIu64 " kind=%u payload=%zu", entry.index.value,
                    entry.term.value, entry.kind, entry.payload.size());
        if (payloads) std::printf(" \"%s\"", escaped(entry.payload, 64).c_str());
        break;
      }
      case RecordType::hard_state: {
        HardState state;
        (void)decode_hard_state_body(record.body, state);
        std::printf(" term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64, state.term.value,
                    state.vote, state.commit.value);
        break;
      }
      case RecordType::snapshot: {
        SnapshotBody snapshot;
        (void)decode_snapshot_body(record.body, snapshot);
        const char* mode = snapshot.mode == SnapshotMode::replace_log      ? "replace_log"
                           : snapshot.mode == SnapshotMode::compact_prefix ? "compact_prefix"
                                                                           : "compact_retaining";
        std::printf(" index=%" PRIu64 " term=%" PRIu64 " mode=%s data=%zu",
                    snapshot.meta.index.value, snapshot.meta.term.value, mode,
                    snapshot.data.size());
        if (snapshot.mode == SnapshotMode::compact_retaining) {
          std::printf(" retain_from=%" PRIu64, snapshot.retain_from.value);
        }
        if (payloads) std::printf(" \"%s\"", escaped(snapshot.data, 64).c_str());
        break;
      }
      case RecordType::release: {
        uint64_t first = 0;
        (void)decode_release_body(record.body, first);
        std::printf(" first_live_segment=%" PRIu64, first);
        break;
      }
      case RecordType::segment_index: {
        uint64_t first = 0;
        std::vector<IndexRow> rows;
        (void)decode_segment_index(record.body, first, rows);
        std::printf(" first_batch=%" PRIu64 " rows=%zu", first, rows.size());
        break;
      }
      case RecordType::segment_seal: {
        uint64_t offset = 0;
        (void)decode_seal(record.body, offset);
        std::printf(" index_batch_offset=%" PRIu64, offset);
        break;
      }
      case RecordType::group_removed:
        break;
    }
  }
  std::printf("\n");
}

int dump(const std::string& dir, std::optional<uint64_t> only_group, bool payloads) {
  auto fs = make_posix_file_system();
  auto names = fs->list(dir);
  if (!names) {
    std::fprintf(stderr, "hamq-dump: %s\n", names.error().detail.c_str());
    return 2;
  }
  std::vector<std::pair<uint64_t, std::string>> segments;
  for (const std::string& name : *names) {
    uint64_t sequence = 0;
    if (parse_segment_file_name(name, sequence)) segments.emplace_back(sequence, name);
  }
  std::sort(segments.begin(), segments.end());
  bool damage = false;
  for (const auto& [sequence, name] : segments) {
    auto file = fs->open(dir + "/" + name, OpenMode::open_existing);
    std::string bytes;
    if (!file || !(*file)->read(0, (*file)->size(), bytes)) {
      std::printf("segment %s: cannot read\n", name.c_str());
      damage = true;
      continue;
    }
    SegmentScanner scanner(bytes, sequence);
    std::printf("segment %s sequence=%" PRIu64 " size=%zu%s\n", name.c_str(), sequence,
                bytes.size(), scanner.header_ok() ? "" : " BAD-HEADER");
    ScannedBatch batch;
    uint64_t last_batch = 0;
    while (true) {
      while (scanner.next(batch)) {
        last_batch = batch.header.batch_sequence;
        std::printf(" batch @%" PRIu64 " sequence=%" PRIu64 " records=%u body=%u\n", batch.offset,
                    batch.header.batch_sequence, batch.header.record_count,
                    batch.header.body_size_bytes);
        for (const ScannedRecord& record : batch.records) {
          if (only_group && record.header.group.value != *only_group) continue;
          print_record(record, payloads);
          damage = damage || !record.body_ok;
        }
      }
      if (!scanner.stopped_at_damage()) break;
      damage = true;
      auto next = scanner.next_valid_batch(scanner.stop_offset(), last_batch);
      std::printf(" DAMAGE @%" PRIu64 " (%s)\n", scanner.stop_offset(),
                  next ? "later batches follow: damaged synced data"
                       : "nothing valid follows: a torn tail if this is the last segment");
      if (!next || !scanner.header_ok()) break;
      std::printf(" resuming at the next whole batch, @%" PRIu64 "\n", *next);
      scanner.resume_at(*next);
    }
  }
  return damage ? 1 : 0;
}

}  // namespace
}  // namespace hamq::storage

int main(int argc, char** argv) {
  std::string dir;
  std::optional<uint64_t> group;
  bool payloads = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--group" && i + 1 < argc) {
      group = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--payloads") {
      payloads = true;
    } else if (arg == "--help" || arg == "-h" || !dir.empty()) {
      std::fprintf(stderr, "usage: hamq-dump DIR [--group N] [--payloads]\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    } else {
      dir = arg;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: hamq-dump DIR [--group N] [--payloads]\n");
    return 2;
  }
  return hamq::storage::dump(dir, group, payloads);
}
