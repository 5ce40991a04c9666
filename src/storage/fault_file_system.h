// FaultFileSystem: an in-memory disk that fails the way real ones do, deterministically from a
// seed. The crash test and the Raft simulator run the storage engine on it.
//
// What it models:
// - Durability: appended bytes survive crash() only once their file was sync()ed; a created or
//   removed name only once its directory was sync_dir()ed (directories themselves are durable
//   when made). On crash() a file keeps its synced bytes and, when tearing is on, none, all or a
//   random prefix of what was appended after the last sync (a torn write: the machine lost power
//   mid-write).
// - Failures: the next append can fail with ENOSPC or EIO after writing a random prefix of its
//   data (as a real write can); the next sync can fail with EIO (and then the unsynced bytes are
//   forgotten by the crash that follows: the page cache dropped them).
// - Sudden death: stop_after(n) lets n more mutating operations through, then every operation
//   fails with io and changes nothing, until crash(): a crash at an exact point of the engine's
//   write sequence.
// File handles opened before a crash() fail with io afterwards: they belong to the dead process.
//
// Thread-safe (one mutex).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "storage/file_system.h"

namespace hamq::storage {

class FaultFileSystem final : public FileSystem {
 public:
  struct Node;

  explicit FaultFileSystem(uint64_t seed);
  ~FaultFileSystem() override;

  Result<std::unique_ptr<File>, Error> open(const std::string& path, OpenMode mode) override;
  Result<std::vector<std::string>, Error> list(const std::string& dir) override;
  Result<void, Error> remove(const std::string& path) override;
  Result<void, Error> make_dir(const std::string& dir) override;
  Result<void, Error> sync_dir(const std::string& dir) override;

  // The next append fails with `code` (no_space or io), after writing a random prefix.
  void fail_next_write(Errc code);
  // The next File::sync fails with io.
  void fail_next_sync();
  // After `operations` more mutating operations (append, sync, truncate, create, remove,
  // sync_dir) every operation fails with io, changing nothing, until crash().
  void stop_after(uint64_t operations);
  bool stopped() const;

  struct CrashOptions {
    bool tear_unsynced = true;  // keep a random prefix of each file's unsynced bytes
  };
  // Power loss and restart: see the contract above.
  void crash(CrashOptions options);

  // Mutating operations so far; a crash test picks its crash points in this count.
  uint64_t operation_count() const;

  // For tests that damage files on purpose: the bytes of a file as they are now, and writing them
  // back (durably).
  std::optional<std::string> contents(const std::string& path) const;
  void set_contents(const std::string& path, std::string data);

 private:
  friend class FaultFile;
  // Called with mutex_ held: counts a mutating operation; false when the machine is stopped.
  bool admit_locked();
  bool stopped_locked() const;

  mutable std::mutex mutex_;
  std::mt19937_64 random_;
  uint64_t generation_ = 0;
  uint64_t operation_count_ = 0;
  std::optional<uint64_t> operations_left_;
  std::optional<Errc> next_write_error_;
  bool next_sync_fails_ = false;
  std::set<std::string> dirs_;
  std::map<std::string, std::shared_ptr<Node>> files_;
};

}  // namespace hamq::storage
