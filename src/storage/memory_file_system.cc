#include "storage/memory_file_system.h"

namespace hamq::storage {

struct MemoryFileSystem::Node {
  mutable std::mutex mutex;
  std::string data;
};

namespace {

class MemoryFile final : public File {
 public:
  explicit MemoryFile(std::shared_ptr<MemoryFileSystem::Node> node) : node_(std::move(node)) {}

  Result<void, Error> append(std::string_view data) override {
    std::lock_guard lock(node_->mutex);
    node_->data.append(data);
    return Ok{};
  }
  Result<void, Error> read(uint64_t offset, uint64_t size, std::string& out) const override {
    std::lock_guard lock(node_->mutex);
    out.clear();
    if (offset < node_->data.size()) out = node_->data.substr(offset, size);
    return Ok{};
  }
  Result<void, Error> sync() override { return Ok{}; }
  Result<void, Error> truncate(uint64_t size_bytes) override {
    std::lock_guard lock(node_->mutex);
    node_->data.resize(size_bytes);
    return Ok{};
  }
  uint64_t size() const override {
    std::lock_guard lock(node_->mutex);
    return node_->data.size();
  }

 private:
  std::shared_ptr<MemoryFileSystem::Node> node_;
};

}  // namespace

std::string parent_dir(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}

Result<std::unique_ptr<File>, Error> MemoryFileSystem::open(const std::string& path,
                                                            OpenMode mode) {
  std::lock_guard lock(mutex_);
  auto found = files_.find(path);
  if (mode == OpenMode::create_new) {
    if (found != files_.end()) return unexpected(Error{Errc::io, "exists: " + path});
    if (!dirs_.contains(parent_dir(path)) && !parent_dir(path).empty()) {
      return unexpected(Error{Errc::not_found, "no directory for " + path});
    }
    found = files_.emplace(path, std::make_shared<Node>()).first;
  } else if (found == files_.end()) {
    return unexpected(Error{Errc::not_found, "no file " + path});
  }
  return std::unique_ptr<File>(std::make_unique<MemoryFile>(found->second));
}

Result<std::vector<std::string>, Error> MemoryFileSystem::list(const std::string& dir) {
  std::lock_guard lock(mutex_);
  if (!dirs_.contains(dir)) return unexpected(Error{Errc::not_found, "no directory " + dir});
  std::vector<std::string> names;
  for (const auto& [path, node] : files_) {
    if (parent_dir(path) == dir) names.push_back(path.substr(dir.size() + 1));
  }
  return names;
}

Result<void, Error> MemoryFileSystem::remove(const std::string& path) {
  std::lock_guard lock(mutex_);
  if (files_.erase(path) == 0) return unexpected(Error{Errc::not_found, "no file " + path});
  return Ok{};
}

Result<void, Error> MemoryFileSystem::make_dir(const std::string& dir) {
  std::lock_guard lock(mutex_);
  dirs_.insert(dir);
  return Ok{};
}

Result<void, Error> MemoryFileSystem::sync_dir(const std::string& dir) {
  std::lock_guard lock(mutex_);
  if (!dirs_.contains(dir)) return unexpected(Error{Errc::not_found, "no directory " + dir});
  return Ok{};
}

}  // namespace hamq::storage
