// PosixFileSystem: the FileSystem of a real disk.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "storage/file_system.h"

namespace hamq::storage {
namespace {

Unexpected<Error> os_error(int error_number, std::string_view what, const std::string& path) {
  Errc code = Errc::io;
  if (error_number == ENOSPC || error_number == EDQUOT) code = Errc::no_space;
  if (error_number == ENOENT) code = Errc::not_found;
  return unexpected(
      Error{code, std::string(what) + " " + path + ": " + std::strerror(error_number)});
}

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path, uint64_t size_bytes)
      : fd_(fd), path_(std::move(path)), size_bytes_(size_bytes) {}
  ~PosixFile() override { ::close(fd_); }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  Result<void, Error> append(std::string_view data) override {
    uint64_t offset = size_bytes_.load(std::memory_order_relaxed);
    while (!data.empty()) {
      ssize_t written = ::pwrite(fd_, data.data(), data.size(), static_cast<off_t>(offset));
      if (written < 0) {
        if (errno == EINTR) continue;
        return os_error(errno, "write", path_);
      }
      offset += static_cast<uint64_t>(written);
      data.remove_prefix(static_cast<size_t>(written));
      // Readers may look at bytes as soon as they are in the page cache.
      size_bytes_.store(offset, std::memory_order_release);
    }
    return Ok{};
  }

  Result<void, Error> read(uint64_t offset, uint64_t size, std::string& out) const override {
    out.resize(size);
    uint64_t done = 0;
    while (done < size) {
      ssize_t got = ::pread(fd_, out.data() + done, size - done, static_cast<off_t>(offset + done));
      if (got < 0) {
        if (errno == EINTR) continue;
        return os_error(errno, "read", path_);
      }
      if (got == 0) break;
      done += static_cast<uint64_t>(got);
    }
    out.resize(done);
    return Ok{};
  }

  Result<void, Error> sync() override {
    if (::fdatasync(fd_) != 0) return os_error(errno, "fdatasync", path_);
    return Ok{};
  }

  Result<void, Error> truncate(uint64_t size_bytes) override {
    if (::ftruncate(fd_, static_cast<off_t>(size_bytes)) != 0) {
      return os_error(errno, "ftruncate", path_);
    }
    size_bytes_.store(size_bytes, std::memory_order_release);
    return Ok{};
  }

  uint64_t size() const override { return size_bytes_.load(std::memory_order_acquire); }

 private:
  int fd_;
  std::string path_;
  std::atomic<uint64_t> size_bytes_;
};

class PosixFileSystem final : public FileSystem {
 public:
  Result<std::unique_ptr<File>, Error> open(const std::string& path, OpenMode mode) override {
    int flags = O_RDWR | O_CLOEXEC;
    if (mode == OpenMode::create_new) flags |= O_CREAT | O_EXCL;
    int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return os_error(errno, "open", path);
    struct stat status {};
    if (::fstat(fd, &status) != 0) {
      int saved = errno;
      ::close(fd);
      return os_error(saved, "fstat", path);
    }
    return std::unique_ptr<File>(
        std::make_unique<PosixFile>(fd, path, static_cast<uint64_t>(status.st_size)));
  }

  Result<std::vector<std::string>, Error> list(const std::string& dir) override {
    DIR* handle = ::opendir(dir.c_str());
    if (handle == nullptr) return os_error(errno, "opendir", dir);
    std::vector<std::string> names;
    while (dirent* item = ::readdir(handle)) {
      std::string name = item->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    ::closedir(handle);
    return names;
  }

  Result<void, Error> remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return os_error(errno, "unlink", path);
    return Ok{};
  }

  Result<void, Error> make_dir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return os_error(errno, "mkdir", dir);
    return Ok{};
  }

  Result<void, Error> sync_dir(const std::string& dir) override {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return os_error(errno, "open", dir);
    int result = ::fsync(fd);
    int saved = errno;
    ::close(fd);
    if (result != 0) return os_error(saved, "fsync", dir);
    return Ok{};
  }
};

}  // namespace

std::unique_ptr<FileSystem> make_posix_file_system() {
  return std::make_unique<PosixFileSystem>();
}

}  // namespace hamq::storage
