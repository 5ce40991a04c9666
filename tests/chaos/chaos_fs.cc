// chaos_fs: the disk of the fault harness's power-loss nemesis (tests/chaos/chaos.py), a FUSE
// filesystem over a backing directory. Everything passes through to the backing directory except
// file data: a write stays in this process's memory, as in a disk's volatile cache, until its file
// is fsynced or fdatasynced, and reads see it. Killing this process with SIGKILL is a power loss:
// what was synced is on the backing disk, what was not is gone. A clean unmount writes everything
// (a clean shutdown).
//
//   chaos_fs BACKING_DIR MOUNTPOINT     (runs in the foreground until unmounted or killed)
//
// What it does not model: creating, renaming and removing a file are durable at once, without the
// directory's fsync (more forgiving than a real filesystem), and a power loss drops every unsynced
// write of a file, never some of them (the simulator's torn writes cover partial ones). A write
// that would not fit on the backing disk with every unsynced byte fails at once with ENOSPC, as a
// filesystem with delayed allocation reserves room at the write.
#define FUSE_USE_VERSION 31
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace {

// A change to a file's data not yet on the backing disk: bytes written at `offset`, or (when
// `truncate`) the file cut or extended to `offset` bytes.
struct Change {
  off_t offset = 0;
  std::string bytes;
  bool truncate = false;
};

// A backing file with changes in memory. Every open of it shares this (looked up by its inode
// number), whatever name it was opened by, so that an fsync through any descriptor writes all.
struct File {
  int fd = -1;  // the backing file, read-write
  std::vector<Change> unsynced;
  uint64_t reserved = 0;  // unsynced bytes written, counted against the backing disk's room
  int opens = 0;
  bool named = true;  // false once the backing disk no longer names it
};

struct State {
  std::string backing;
  std::mutex mutex;
  std::map<ino_t, std::shared_ptr<File>> files;  // those open or with unsynced changes
  std::map<uint64_t, std::shared_ptr<File>> handles;
  uint64_t next_handle = uint64_t{1} << 32;  // (a directory's handle is its descriptor: below)
  uint64_t reserved = 0;
};

State* state = nullptr;

std::string backing_path(const char* path) {
  return state->backing + path;
}

int error_code() {
  return -errno;
}

// The file's size with its unsynced changes, given its size on the backing disk.
off_t size_with_changes(const File& file, off_t backing_size) {
  off_t size = backing_size;
  for (const Change& change : file.unsynced) {
    size = change.truncate
               ? change.offset
               : std::max(size, change.offset + static_cast<off_t>(change.bytes.size()));
  }
  return size;
}

void release_reservation(File& file) {
  state->reserved -= file.reserved;
  file.reserved = 0;
}

// Writes the file's changes to the backing disk, in order, and syncs it.
int sync(File& file, bool data_only) {
  for (const Change& change : file.unsynced) {
    if (change.truncate) {
      if (::ftruncate(file.fd, change.offset) != 0) return error_code();
      continue;
    }
    size_t done = 0;
    while (done < change.bytes.size()) {
      ssize_t written = ::pwrite(file.fd, change.bytes.data() + done, change.bytes.size() - done,
                                 change.offset + static_cast<off_t>(done));
      if (written < 0) return error_code();
      done += static_cast<size_t>(written);
    }
  }
  file.unsynced.clear();
  release_reservation(file);
  int synced = data_only ? ::fdatasync(file.fd) : ::fsync(file.fd);
  return synced == 0 ? 0 : error_code();
}

// Forgets the file with this inode number, if the backing disk no longer names it: its unsynced
// changes can never be read again.
void forget_if_gone(const struct stat& before) {
  if (!S_ISREG(before.st_mode) || before.st_nlink > 1) return;
  auto found = state->files.find(before.st_ino);
  if (found == state->files.end()) return;
  std::shared_ptr<File> file = found->second;
  state->files.erase(found);
  file->named = false;
  file->unsynced.clear();
  release_reservation(*file);
  if (file->opens == 0) ::close(file->fd);
}

std::shared_ptr<File> handle_file(const fuse_file_info* info) {
  auto found = state->handles.find(info->fh);
  return found == state->handles.end() ? nullptr : found->second;
}

// The file shared by the opens of the backing file `fd` (which it takes, or closes if one exists).
std::shared_ptr<File> adopt(int fd) {
  struct stat status;
  if (::fstat(fd, &status) != 0) return nullptr;
  auto& file = state->files[status.st_ino];
  if (file) {
    ::close(fd);
  } else {
    file = std::make_shared<File>();
    file->fd = fd;
  }
  return file;
}

// Closes the file once nothing has it open and nothing of it is unsynced (or it has no name).
void drop_if_idle(const std::shared_ptr<File>& file) {
  if (file->opens > 0 || (file->named && !file->unsynced.empty())) return;
  release_reservation(*file);
  if (file->named) {
    struct stat status;
    if (::fstat(file->fd, &status) == 0) state->files.erase(status.st_ino);
  }
  ::close(file->fd);
}

int do_getattr(const char* path, struct stat* status, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> open = info ? handle_file(info) : nullptr;
  int got = open    ? ::fstat(open->fd, status)
            : !path ? ::fstat(static_cast<int>(info->fh), status)  // an open directory
                    : ::lstat(backing_path(path).c_str(), status);
  if (got != 0) return error_code();
  if (S_ISREG(status->st_mode)) {
    auto found = state->files.find(status->st_ino);
    if (found != state->files.end()) {
      status->st_size = size_with_changes(*found->second, status->st_size);
    }
  }
  return 0;
}

int do_open(const std::string& path, int flags, mode_t mode, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  bool truncate = flags & O_TRUNC;
  flags = (flags & ~(O_ACCMODE | O_TRUNC | O_APPEND)) | O_RDWR;
  int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) return error_code();
  std::shared_ptr<File> file = adopt(fd);
  if (!file) return error_code();
  if (truncate) file->unsynced.push_back(Change{0, {}, true});
  ++file->opens;
  info->fh = state->next_handle++;
  info->direct_io = 1;  // no page cache: every read comes here, and none outlives a power loss
  state->handles[info->fh] = file;
  return 0;
}

int do_create(const char* path, mode_t mode, fuse_file_info* info) {
  return do_open(backing_path(path), info->flags | O_CREAT, mode, info);
}

int do_open_existing(const char* path, fuse_file_info* info) {
  return do_open(backing_path(path), info->flags & ~O_CREAT, 0, info);
}

int do_read(const char*, char* out, size_t size, off_t offset, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  if (!file) return -EBADF;
  struct stat status;
  if (::fstat(file->fd, &status) != 0) return error_code();
  std::memset(out, 0, size);
  size_t done = 0;
  while (done < size) {
    ssize_t got = ::pread(file->fd, out + done, size - done, offset + static_cast<off_t>(done));
    if (got < 0) return error_code();
    if (got == 0) break;
    done += static_cast<size_t>(got);
  }
  off_t end = offset + static_cast<off_t>(size);
  off_t file_size = status.st_size;
  for (const Change& change : file->unsynced) {
    if (change.truncate) {
      // Bytes past the new end read as zeros if a later write extends the file again.
      if (change.offset < end) {
        off_t from = std::max(change.offset, offset);
        std::memset(out + (from - offset), 0, static_cast<size_t>(end - from));
      }
      file_size = change.offset;
      continue;
    }
    off_t change_end = change.offset + static_cast<off_t>(change.bytes.size());
    off_t from = std::max(change.offset, offset);
    off_t to = std::min(change_end, end);
    if (from < to) {
      std::memcpy(out + (from - offset), change.bytes.data() + (from - change.offset),
                  static_cast<size_t>(to - from));
    }
    file_size = std::max(file_size, change_end);
  }
  return static_cast<int>(std::clamp<off_t>(file_size - offset, 0, static_cast<off_t>(size)));
}

int do_write(const char*, const char* data, size_t size, off_t offset, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  if (!file) return -EBADF;
  struct statvfs disk;
  if (::statvfs(state->backing.c_str(), &disk) != 0) return error_code();
  if (state->reserved + size > static_cast<uint64_t>(disk.f_bavail) * disk.f_frsize) {
    return -ENOSPC;
  }
  file->unsynced.push_back(Change{offset, std::string(data, size), false});
  file->reserved += size;
  state->reserved += size;
  return static_cast<int>(size);
}

int do_truncate(const char* path, off_t size, fuse_file_info* info) {
  if (!info) {
    fuse_file_info opened{};
    opened.flags = O_RDWR;
    if (int got = do_open(backing_path(path), O_RDWR, 0, &opened); got != 0) return got;
    std::lock_guard lock(state->mutex);
    std::shared_ptr<File> file = handle_file(&opened);
    file->unsynced.push_back(Change{size, {}, true});
    state->handles.erase(opened.fh);
    --file->opens;
    drop_if_idle(file);
    return 0;
  }
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  if (!file) return -EBADF;
  file->unsynced.push_back(Change{size, {}, true});
  return 0;
}

int do_fsync(const char*, int data_only, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  if (!file) return -EBADF;
  return sync(*file, data_only != 0);
}

int do_release(const char*, fuse_file_info* info) {
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  if (!file) return 0;
  state->handles.erase(info->fh);
  --file->opens;
  drop_if_idle(file);
  return 0;
}

// An open directory's handle is its backing directory's descriptor (operations given a handle
// may get no path: nullpath_ok).
int do_opendir(const char* path, fuse_file_info* info) {
  int fd = ::open(backing_path(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return error_code();
  info->fh = static_cast<uint64_t>(fd);
  return 0;
}

int do_releasedir(const char*, fuse_file_info* info) {
  ::close(static_cast<int>(info->fh));
  return 0;
}

int do_readdir(const char*, void* buffer, fuse_fill_dir_t fill, off_t, fuse_file_info* info,
               fuse_readdir_flags) {
  int fd = ::dup(static_cast<int>(info->fh));
  if (fd < 0) return error_code();
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    int error = error_code();
    ::close(fd);
    return error;
  }
  ::rewinddir(dir);
  while (dirent* entry = ::readdir(dir)) {
    fill(buffer, entry->d_name, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  }
  ::closedir(dir);
  return 0;
}

int do_fsyncdir(const char*, int, fuse_file_info* info) {
  return ::fsync(static_cast<int>(info->fh)) == 0 ? 0 : error_code();
}

int do_mkdir(const char* path, mode_t mode) {
  return ::mkdir(backing_path(path).c_str(), mode) == 0 ? 0 : error_code();
}

int do_rmdir(const char* path) {
  return ::rmdir(backing_path(path).c_str()) == 0 ? 0 : error_code();
}

int do_unlink(const char* path) {
  std::lock_guard lock(state->mutex);
  struct stat before;
  if (::lstat(backing_path(path).c_str(), &before) != 0) return error_code();
  if (::unlink(backing_path(path).c_str()) != 0) return error_code();
  forget_if_gone(before);
  return 0;
}

int do_rename(const char* from, const char* to, unsigned int flags) {
  std::lock_guard lock(state->mutex);
  struct stat replaced;
  bool replaces = ::lstat(backing_path(to).c_str(), &replaced) == 0;
  if (::renameat2(AT_FDCWD, backing_path(from).c_str(), AT_FDCWD, backing_path(to).c_str(),
                  flags) != 0) {
    return error_code();
  }
  if (replaces && !(flags & RENAME_EXCHANGE)) forget_if_gone(replaced);
  return 0;
}

// The backing descriptor of an open file's handle, or -1 (then the path names it).
int handle_fd(const fuse_file_info* info) {
  if (!info) return -1;
  std::lock_guard lock(state->mutex);
  std::shared_ptr<File> file = handle_file(info);
  return file ? file->fd : -1;
}

int do_chmod(const char* path, mode_t mode, fuse_file_info* info) {
  int fd = handle_fd(info);
  int done = fd >= 0 ? ::fchmod(fd, mode) : ::chmod(backing_path(path).c_str(), mode);
  return done == 0 ? 0 : error_code();
}

int do_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* info) {
  int fd = handle_fd(info);
  int done = fd >= 0 ? ::fchown(fd, uid, gid) : ::lchown(backing_path(path).c_str(), uid, gid);
  return done == 0 ? 0 : error_code();
}

int do_utimens(const char* path, const timespec times[2], fuse_file_info* info) {
  int fd = handle_fd(info);
  int done = fd >= 0
                 ? ::futimens(fd, times)
                 : ::utimensat(AT_FDCWD, backing_path(path).c_str(), times, AT_SYMLINK_NOFOLLOW);
  return done == 0 ? 0 : error_code();
}

int do_access(const char* path, int mode) {
  return ::access(backing_path(path).c_str(), mode) == 0 ? 0 : error_code();
}

int do_statfs(const char*, struct statvfs* disk) {
  std::lock_guard lock(state->mutex);
  if (::statvfs(state->backing.c_str(), disk) != 0) return error_code();
  uint64_t reserved_blocks = (state->reserved + disk->f_frsize - 1) / disk->f_frsize;
  disk->f_bavail -= std::min<uint64_t>(disk->f_bavail, reserved_blocks);
  disk->f_bfree -= std::min<uint64_t>(disk->f_bfree, reserved_blocks);
  return 0;
}

void* do_init(fuse_conn_info*, fuse_config* config) {
  config->use_ino = 1;
  config->attr_timeout = 0;  // sizes come from here, with the unsynced writes
  config->entry_timeout = 0;
  config->negative_timeout = 0;
  config->hard_remove = 1;  // an unlinked open file stays open, not renamed to .fuse_hidden
  config->nullpath_ok = 1;
  config->direct_io = 1;
  config->kernel_cache = 0;
  return nullptr;
}

// A clean unmount: everything is written, as a clean shutdown does.
void do_destroy(void*) {
  std::lock_guard lock(state->mutex);
  for (auto& [inode, file] : state->files) {
    if (!file->unsynced.empty() && sync(*file, true) != 0) {
      std::fprintf(stderr, "chaos_fs: cannot write inode %lu at unmount: %s\n",
                   static_cast<unsigned long>(inode), std::strerror(errno));
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s BACKING_DIR MOUNTPOINT\n", argv[0]);
    return 2;
  }
  char* backing = ::realpath(argv[1], nullptr);
  if (!backing) {
    std::fprintf(stderr, "chaos_fs: %s: %s\n", argv[1], std::strerror(errno));
    return 2;
  }
  State shared;
  shared.backing = backing;
  std::free(backing);
  state = &shared;

  fuse_operations operations{};
  operations.getattr = do_getattr;
  operations.mkdir = do_mkdir;
  operations.unlink = do_unlink;
  operations.rmdir = do_rmdir;
  operations.rename = do_rename;
  operations.chmod = do_chmod;
  operations.chown = do_chown;
  operations.truncate = do_truncate;
  operations.open = do_open_existing;
  operations.read = do_read;
  operations.write = do_write;
  operations.statfs = do_statfs;
  operations.release = do_release;
  operations.fsync = do_fsync;
  operations.opendir = do_opendir;
  operations.releasedir = do_releasedir;
  operations.readdir = do_readdir;
  operations.fsyncdir = do_fsyncdir;
  operations.init = do_init;
  operations.destroy = do_destroy;
  operations.access = do_access;
  operations.create = do_create;
  operations.utimens = do_utimens;

  // Foreground, one thread (every operation takes the lock anyway), named in /proc/mounts.
  std::vector<char*> args = {argv[0],
                             const_cast<char*>("-f"),
                             const_cast<char*>("-s"),
                             const_cast<char*>("-o"),
                             const_cast<char*>("fsname=chaos_fs"),
                             argv[2]};
  return fuse_main(static_cast<int>(args.size()), args.data(), &operations, nullptr);
}
