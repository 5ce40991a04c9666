#include "storage/fault_file_system.h"

#include "storage/memory_file_system.h"

namespace hamq::storage {

struct FaultFileSystem::Node {
  std::string data;
  std::string durable_data;
  bool exists = true;
  bool durable_exists = false;
};

namespace {
Unexpected<Error> dead() {
  return unexpected(Error{Errc::io, "simulated machine is down"});
}
}  // namespace

class FaultFile final : public File {
 public:
  FaultFile(FaultFileSystem* fs, std::shared_ptr<FaultFileSystem::Node> node, uint64_t generation)
      : fs_(fs), node_(std::move(node)), generation_(generation) {}

  Result<void, Error> append(std::string_view data) override {
    std::lock_guard lock(fs_->mutex_);
    if (!alive_locked() || !fs_->admit_locked()) return dead();
    if (fs_->next_write_error_) {
      Errc code = *fs_->next_write_error_;
      fs_->next_write_error_.reset();
      std::uniform_int_distribution<size_t> prefix(0, data.size());
      node_->data.append(data.substr(0, prefix(fs_->random_)));
      return unexpected(Error{code, code == Errc::no_space ? "simulated ENOSPC" : "simulated EIO"});
    }
    node_->data.append(data);
    return Ok{};
  }

  Result<void, Error> read(uint64_t offset, uint64_t size, std::string& out) const override {
    std::lock_guard lock(fs_->mutex_);
    if (!alive_locked() || fs_->stopped_locked()) return dead();
    out.clear();
    if (offset < node_->data.size()) out = node_->data.substr(offset, size);
    return Ok{};
  }

  Result<void, Error> sync() override {
    std::lock_guard lock(fs_->mutex_);
    if (!alive_locked() || !fs_->admit_locked()) return dead();
    if (fs_->next_sync_fails_) {
      fs_->next_sync_fails_ = false;
      return unexpected(Error{Errc::io, "simulated fsync EIO"});
    }
    node_->durable_data = node_->data;
    return Ok{};
  }

  Result<void, Error> truncate(uint64_t size_bytes) override {
    std::lock_guard lock(fs_->mutex_);
    if (!alive_locked() || !fs_->admit_locked()) return dead();
    node_->data.resize(size_bytes);
    return Ok{};
  }

  uint64_t size() const override {
    std::lock_guard lock(fs_->mutex_);
    return node_->data.size();
  }

 private:
  bool alive_locked() const { return generation_ == fs_->generation_; }

  FaultFileSystem* fs_;
  std::shared_ptr<FaultFileSystem::Node> node_;
  uint64_t generation_;
};

FaultFileSystem::FaultFileSystem(uint64_t seed) : random_(seed) {}
FaultFileSystem::~FaultFileSystem() = default;

bool FaultFileSystem::admit_locked() {
  if (operations_left_) {
    if (*operations_left_ == 0) return false;
    --*operations_left_;
  }
  ++operation_count_;
  return true;
}

bool FaultFileSystem::stopped_locked() const {
  return operations_left_ && *operations_left_ == 0;
}

Result<std::unique_ptr<File>, Error> FaultFileSystem::open(const std::string& path, OpenMode mode) {
  std::lock_guard lock(mutex_);
  if (stopped_locked()) return dead();
  auto found = files_.find(path);
  bool present = found != files_.end() && found->second->exists;
  if (mode == OpenMode::create_new) {
    if (present) return unexpected(Error{Errc::io, "exists: " + path});
    if (!dirs_.contains(parent_dir(path))) {
      return unexpected(Error{Errc::not_found, "no directory for " + path});
    }
    if (!admit_locked()) return dead();
    auto node = std::make_shared<Node>();
    if (found != files_.end()) {
      // Removed but not yet durably: the old name may still come back in a crash; a new file
      // replaces it outright (the engine never reuses a name, this is for completeness).
      found->second = node;
    } else {
      found = files_.emplace(path, node).first;
    }
  } else if (!present) {
    return unexpected(Error{Errc::not_found, "no file " + path});
  }
  return std::unique_ptr<File>(std::make_unique<FaultFile>(this, found->second, generation_));
}

Result<std::vector<std::string>, Error> FaultFileSystem::list(const std::string& dir) {
  std::lock_guard lock(mutex_);
  if (stopped_locked()) return dead();
  if (!dirs_.contains(dir)) return unexpected(Error{Errc::not_found, "no directory " + dir});
  std::vector<std::string> names;
  for (const auto& [path, node] : files_) {
    if (node->exists && parent_dir(path) == dir) names.push_back(path.substr(dir.size() + 1));
  }
  return names;
}

Result<void, Error> FaultFileSystem::remove(const std::string& path) {
  std::lock_guard lock(mutex_);
  auto found = files_.find(path);
  if (found == files_.end() || !found->second->exists) {
    if (stopped_locked()) return dead();
    return unexpected(Error{Errc::not_found, "no file " + path});
  }
  if (!admit_locked()) return dead();
  found->second->exists = false;
  return Ok{};
}

Result<void, Error> FaultFileSystem::make_dir(const std::string& dir) {
  std::lock_guard lock(mutex_);
  if (stopped_locked()) return dead();
  dirs_.insert(dir);
  return Ok{};
}

Result<void, Error> FaultFileSystem::sync_dir(const std::string& dir) {
  std::lock_guard lock(mutex_);
  if (!admit_locked()) return dead();
  if (!dirs_.contains(dir)) return unexpected(Error{Errc::not_found, "no directory " + dir});
  for (auto it = files_.begin(); it != files_.end();) {
    if (parent_dir(it->first) != dir) {
      ++it;
      continue;
    }
    it->second->durable_exists = it->second->exists;
    if (!it->second->exists) {
      it = files_.erase(it);
    } else {
      ++it;
    }
  }
  return Ok{};
}

void FaultFileSystem::fail_next_write(Errc code) {
  std::lock_guard lock(mutex_);
  next_write_error_ = code;
}

void FaultFileSystem::fail_next_sync() {
  std::lock_guard lock(mutex_);
  next_sync_fails_ = true;
}

void FaultFileSystem::stop_after(uint64_t operations) {
  std::lock_guard lock(mutex_);
  operations_left_ = operations;
}

bool FaultFileSystem::stopped() const {
  std::lock_guard lock(mutex_);
  return stopped_locked();
}

uint64_t FaultFileSystem::operation_count() const {
  std::lock_guard lock(mutex_);
  return operation_count_;
}

void FaultFileSystem::crash(CrashOptions options) {
  std::lock_guard lock(mutex_);
  ++generation_;
  operations_left_.reset();
  next_write_error_.reset();
  next_sync_fails_ = false;
  for (auto it = files_.begin(); it != files_.end();) {
    Node& node = *it->second;
    if (!node.durable_exists) {
      it = files_.erase(it);
      continue;
    }
    std::string survived = node.durable_data;
    bool appended_since_sync =
        node.data.size() > node.durable_data.size() &&
        node.data.compare(0, node.durable_data.size(), node.durable_data) == 0;
    if (options.tear_unsynced && appended_since_sync) {
      // A third of the time nothing of it reached the disk, a third all of it (the kernel wrote
      // the pages back before the crash), a third a random prefix.
      size_t unsynced = node.data.size() - node.durable_data.size();
      std::uniform_int_distribution<size_t> kept(0, unsynced);
      switch (random_() % 3) {
        case 0:
          break;
        case 1:
          survived = node.data;
          break;
        default:
          survived = node.data.substr(0, node.durable_data.size() + kept(random_));
      }
    }
    // A fresh node: handles from before the crash keep the old one and are dead anyway.
    auto fresh = std::make_shared<Node>();
    fresh->data = survived;
    fresh->durable_data = survived;
    fresh->durable_exists = true;
    it->second = fresh;
    ++it;
  }
}

std::optional<std::string> FaultFileSystem::contents(const std::string& path) const {
  std::lock_guard lock(mutex_);
  auto found = files_.find(path);
  if (found == files_.end() || !found->second->exists) return std::nullopt;
  return found->second->data;
}

void FaultFileSystem::set_contents(const std::string& path, std::string data) {
  std::lock_guard lock(mutex_);
  auto found = files_.find(path);
  HAMQ_VERIFY(found != files_.end(), "set_contents of a file that does not exist");
  found->second->data = data;
  found->second->durable_data = std::move(data);
}

}  // namespace hamq::storage
