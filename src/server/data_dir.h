// DataDirLock: the broker's claim on its data directory, so that two servers never share one.
#pragma once

#include <filesystem>

#include "common/result.h"

namespace hamq::server {

class DataDirLock {
 public:
  // Creates the directory if needed and takes an exclusive lock on its LOCK file.
  static Result<DataDirLock, std::string> acquire(const std::filesystem::path& dir);
  DataDirLock(DataDirLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DataDirLock& operator=(DataDirLock&&) = delete;
  DataDirLock(const DataDirLock&) = delete;
  ~DataDirLock();

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace hamq::server
