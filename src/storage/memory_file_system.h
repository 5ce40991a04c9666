// MemoryFileSystem: files held in memory, for fast tests and tools. Everything written is
// immediately "durable" (there is no crash to lose it); FaultFileSystem models crashes.
//
// Paths are plain strings: "dir/name". Directories must be made before files are created in them.
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "storage/file_system.h"

namespace hamq::storage {

class MemoryFileSystem final : public FileSystem {
 public:
  struct Node;

  Result<std::unique_ptr<File>, Error> open(const std::string& path, OpenMode mode) override;
  Result<std::vector<std::string>, Error> list(const std::string& dir) override;
  Result<void, Error> remove(const std::string& path) override;
  Result<void, Error> make_dir(const std::string& dir) override;
  Result<void, Error> sync_dir(const std::string& dir) override;

 private:
  std::mutex mutex_;
  std::set<std::string> dirs_;
  std::map<std::string, std::shared_ptr<Node>> files_;
};

// "dir/name" -> "dir"; "name" -> "".
std::string parent_dir(const std::string& path);

}  // namespace hamq::storage
