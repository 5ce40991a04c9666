// Helpers shared by the Wal's tests.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "storage/wal.h"

namespace hamq::storage::testing_util {

inline std::string payload_of(GroupId group, LogIndex index, Term term) {
  return "g" + std::to_string(group.value) + "-i" + std::to_string(index.value) + "-t" +
         std::to_string(term.value);
}

// Submits entries [from, to] of `group` in `term`, with payload_of() payloads.
inline void append_range(Wal& wal, GroupId group, uint64_t from, uint64_t to, uint64_t term) {
  std::vector<std::string> payloads;
  std::vector<EntryInput> entries;
  for (uint64_t index = from; index <= to; ++index) {
    payloads.push_back(payload_of(group, LogIndex{index}, Term{term}));
  }
  for (uint64_t index = from; index <= to; ++index) {
    entries.push_back(EntryInput{Term{term}, LogIndex{index}, 0, payloads[index - from]});
  }
  auto appended = wal.append(group, entries);
  HAMQ_VERIFY(appended.ok(), "append failed");
}

inline std::unique_ptr<Wal> open_or_die(FileSystem& fs, const std::string& dir,
                                        WalOptions options = {}, RecoveryReport* report = nullptr) {
  auto wal = Wal::open(fs, dir, options, report);
  if (!wal) ADD_FAILURE() << "open: " << wal.error().detail;
  HAMQ_VERIFY(wal.ok(), "open failed");
  return std::move(wal.value());
}

inline FlushResult flush_or_die(Wal& wal) {
  auto flushed = wal.flush();
  if (!flushed) ADD_FAILURE() << "flush: " << flushed.error().detail;
  HAMQ_VERIFY(flushed.ok(), "flush failed");
  return std::move(flushed.value());
}

inline std::vector<Entry> read_all(const Wal& wal, GroupId group) {
  std::vector<Entry> out;
  auto read =
      wal.entries(group, wal.first_index(group), wal.last_index(group) + 1, UINT64_MAX, out);
  if (!read) ADD_FAILURE() << "entries: " << read.error().detail;
  return out;
}

}  // namespace hamq::storage::testing_util
