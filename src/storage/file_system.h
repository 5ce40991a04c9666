// FileSystem and File: every byte the storage engine reads or writes goes through these, so that
// one engine runs on a real disk (PosixFileSystem), in memory (MemoryFileSystem) and on a disk
// that crashes, tears writes and fails (FaultFileSystem, for the crash test and the simulator).
//
// The model is the one POSIX promises and no more: appended bytes are durable only after sync()
// returns ok; a created or removed file name is durable only after sync_dir() of its directory.
// A sync() that fails leaves the file in an unknown state: callers must not retry it and assume
// the data safe (the PostgreSQL "fsyncgate" lesson), they stop writing that file.
//
// Threads: a FileSystem may be used from several threads. One File is written (append, sync,
// truncate) by one thread at a time; read() may run concurrently with them, on bytes that an
// earlier append returned.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "storage/types.h"

namespace hamq::storage {

class File {
 public:
  virtual ~File() = default;

  // Appends at the end of the file. On failure a prefix of `data` may have been written: the
  // caller truncates back to the size it had before if it wants to continue.
  virtual Result<void, Error> append(std::string_view data) = 0;
  // Reads up to `size` bytes at `offset` into `out` (replacing its contents); fewer at the end of
  // the file.
  virtual Result<void, Error> read(uint64_t offset, uint64_t size, std::string& out) const = 0;
  // Makes every appended byte durable (fdatasync).
  virtual Result<void, Error> sync() = 0;
  // Cuts the file to `size_bytes`; durable after the next sync().
  virtual Result<void, Error> truncate(uint64_t size_bytes) = 0;
  virtual uint64_t size() const = 0;
};

enum class OpenMode : uint8_t {
  create_new,     // fails if the file exists
  open_existing,  // fails with not_found if it does not
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  virtual Result<std::unique_ptr<File>, Error> open(const std::string& path, OpenMode mode) = 0;
  // The names (not paths) of the files in `dir`, in no particular order.
  virtual Result<std::vector<std::string>, Error> list(const std::string& dir) = 0;
  virtual Result<void, Error> remove(const std::string& path) = 0;
  // Creates `dir` if it does not exist (its parent must).
  virtual Result<void, Error> make_dir(const std::string& dir) = 0;
  // Makes the creation and removal of names in `dir` durable.
  virtual Result<void, Error> sync_dir(const std::string& dir) = 0;
};

// The real disk, through open/pwrite/pread/fdatasync/ftruncate.
std::unique_ptr<FileSystem> make_posix_file_system();

}  // namespace hamq::storage
