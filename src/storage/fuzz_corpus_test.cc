// Writes the seed corpus of fuzz/wal_record_fuzzer when HAMQ_WRITE_WAL_CORPUS names a directory
// (tools/make_wal_fuzz_corpus.sh does); otherwise checks that the seeds can be made. The seeds
// are segments the real Wal writes: entries of several groups, hard states, snapshots, removals,
// release records after reclamation, a sealed segment with its index, and damaged copies (a torn
// tail, a flipped bit).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "storage/memory_file_system.h"
#include "storage/record.h"
#include "storage/wal.h"
#include "storage/wal_test_util.h"

namespace hamq::storage {
namespace {

using testing_util::append_range;
using testing_util::flush_or_die;
using testing_util::open_or_die;

std::string read_segment(FileSystem& fs, uint64_t sequence) {
  auto file = fs.open("wal/" + segment_file_name(sequence), OpenMode::open_existing);
  HAMQ_VERIFY(file.ok(), "open segment");
  std::string bytes;
  HAMQ_VERIFY((*file)->read(0, (*file)->size(), bytes).ok(), "read segment");
  return bytes;
}

std::map<std::string, std::string> make_seeds() {
  std::map<std::string, std::string> seeds;
  {
    MemoryFileSystem fs;
    auto wal = open_or_die(fs, "wal");
    seeds["empty-segment"] = read_segment(fs, 1);
    append_range(*wal, GroupId{1}, 1, 3, 1);
    append_range(*wal, GroupId{2}, 1, 2, 1);
    flush_or_die(*wal);
    EXPECT_TRUE(wal->save_hard_state(GroupId{1}, HardState{Term{2}, 1, LogIndex{3}}));
    append_range(*wal, GroupId{1}, 2, 4, 2);  // a conflicting suffix
    flush_or_die(*wal);
    EXPECT_TRUE(wal->save_snapshot(GroupId{2}, SnapshotMeta{LogIndex{2}, Term{1}},
                                   SnapshotMode::compact_prefix, "state"));
    EXPECT_TRUE(wal->remove_group(GroupId{3}));
    flush_or_die(*wal);
    std::string segment = read_segment(fs, 1);
    seeds["entries-hard-state-snapshot"] = segment;
    seeds["torn-tail"] = segment.substr(0, segment.size() - 5);
    std::string flipped = segment;
    flipped[segment.size() / 3] ^= 0x20;
    seeds["flipped-bit"] = flipped;
  }
  {
    MemoryFileSystem fs;
    WalOptions options;
    options.segment_size_bytes_target = 1024;
    auto wal = open_or_die(fs, "wal", options);
    for (uint64_t round = 0; round < 6; ++round) {
      append_range(*wal, GroupId{1}, round * 10 + 1, round * 10 + 10, 1);
      EXPECT_TRUE(wal->save_snapshot(GroupId{1}, SnapshotMeta{LogIndex{round * 10 + 10}, Term{1}},
                                     SnapshotMode::compact_prefix, "s"));
      flush_or_die(*wal);
    }
    SpaceStats space = wal->space();
    EXPECT_GT(space.segments_deleted, 0u);
    // The active segment holds the release record and the latest snapshot.
    seeds["release-and-snapshot"] = read_segment(fs, space.active_segment);
  }
  {
    MemoryFileSystem fs;
    WalOptions options;
    options.segment_size_bytes_target = 1024;
    auto wal = open_or_die(fs, "wal", options);
    for (uint64_t round = 0; round < 4; ++round) {
      append_range(*wal, GroupId{1}, round * 10 + 1, round * 10 + 10, 1);
      EXPECT_TRUE(wal->save_hard_state(GroupId{2}, HardState{Term{round}, 1, LogIndex{0}}));
      if (round == 1) {  // a snapshot that keeps entries 12 to 15 readable
        EXPECT_TRUE(wal->save_snapshot(GroupId{1}, SnapshotMeta{LogIndex{15}, Term{1}},
                                       SnapshotMode::compact_retaining, "r", LogIndex{12}));
      }
      flush_or_die(*wal);
    }
    EXPECT_GT(wal->space().segment_count, 1u);
    seeds["sealed-segment"] = read_segment(fs, 1);  // ends with its index and seal
  }
  return seeds;
}

TEST(WalFuzzCorpus, SeedsAreMadeByTheRealLogAndWrittenWhenAsked) {
  std::map<std::string, std::string> seeds = make_seeds();
  EXPECT_EQ(seeds.size(), 6u);
  for (const auto& [name, bytes] : seeds) EXPECT_FALSE(bytes.empty()) << name;
  const char* dir = std::getenv("HAMQ_WRITE_WAL_CORPUS");
  if (dir == nullptr) return;  // the suite only checks that they can be made
  std::filesystem::create_directories(dir);
  for (const auto& [name, bytes] : seeds) {
    std::ofstream(std::string(dir) + "/" + name, std::ios::binary) << bytes;
  }
}

}  // namespace
}  // namespace hamq::storage
