// hamq-storage-bench: the storage engine's throughput goals (bench/README.md, "Storage").
//
//   baseline   plain write + fdatasync of 1 MiB blocks to one file: the disk's sequential
//              write bandwidth as this program can reach it
//   wal        1 KiB entries appended through Wal + GroupCommitWriter, round-robin over G groups,
//              one entry per append call; reports durable MiB/s and entries/s
//
// Each phase writes --bytes (default 1 GiB) into a fresh directory under --dir, which is removed
// afterwards; --rounds rounds (default 5) alternate the phases (the two WAL phases swap order
// every round) and the medians are compared.
// Run on the disk being measured; the figures go to bench/RESULTS.md.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "storage/group_commit_writer.h"
#include "storage/wal.h"

namespace hamq::storage {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double baseline_mib_per_second(const std::string& dir, uint64_t total_bytes) {
  std::filesystem::create_directories(dir);
  std::string path = dir + "/baseline";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror("open");
    std::exit(1);
  }
  constexpr uint64_t block_bytes = 1 << 20;
  std::string block(block_bytes, 'b');
  auto start = Clock::now();
  for (uint64_t written = 0; written < total_bytes; written += block_bytes) {
    if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size()) ||
        ::fdatasync(fd) != 0) {
      std::perror("write/fdatasync");
      std::exit(1);
    }
  }
  double elapsed = seconds_since(start);
  ::close(fd);
  std::filesystem::remove_all(dir);
  return static_cast<double>(total_bytes) / (1 << 20) / elapsed;
}

// CPU seconds (user + system) of the whole process so far.
double cpu_seconds() {
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct WalFigures {
  double cpu_seconds_per_gib = 0;  // what the disk's speed does not change
  double mib_per_second = 0;
  double entries_per_second = 0;
  uint64_t batches = 0;
  double average_batch_kib = 0;
};

WalFigures wal_run(const std::string& dir, uint64_t total_bytes, uint64_t groups,
                   uint64_t entry_bytes) {
  std::filesystem::remove_all(dir);
  auto fs = make_posix_file_system();
  auto opened = Wal::open(*fs, dir);
  if (!opened) {
    std::fprintf(stderr, "open: %s\n", opened.error().detail.c_str());
    std::exit(1);
  }
  Wal& wal = **opened;
  std::mutex mutex;
  std::condition_variable durable_changed;
  uint64_t durable_entries = 0;
  std::atomic<bool> failed{false};
  GroupCommitWriter writer(
      wal,
      [&](const FlushResult& result) {
        // Every record of the benchmark is an entry of the same size (24 B record header, 17 B
        // fixed body, the payload), after one 32 B batch header.
        uint64_t entries = (result.bytes_written - 32) / (entry_bytes + 41);
        std::lock_guard lock(mutex);
        durable_entries += entries;
        durable_changed.notify_all();
      },
      [&](const Error& error) {
        std::fprintf(stderr, "writer failed: %s\n", error.detail.c_str());
        failed = true;
        durable_changed.notify_all();
      });
  std::string payload(entry_bytes, 'p');
  uint64_t total_entries = total_bytes / entry_bytes;
  std::vector<uint64_t> next_index(groups, 1);
  auto start = Clock::now();
  double cpu_start = cpu_seconds();
  for (uint64_t submitted = 0; submitted < total_entries && !failed; ++submitted) {
    uint64_t group = submitted % groups;
    EntryInput entry{Term{1}, LogIndex{next_index[group]}, 0, payload};
    while (true) {
      auto appended = wal.append(GroupId{group + 1}, std::span(&entry, 1));
      if (appended) break;
      if (appended.error().code != Errc::busy) {
        std::fprintf(stderr, "append: %s\n", appended.error().detail.c_str());
        std::exit(1);
      }
      // Back-pressure: wait for the writer to take a batch.
      writer.notify();
      std::unique_lock lock(mutex);
      durable_changed.wait_for(lock, std::chrono::milliseconds(1));
    }
    ++next_index[group];
    if (submitted % 64 == 0) writer.notify();
  }
  writer.notify();
  {
    std::unique_lock lock(mutex);
    durable_changed.wait(lock, [&] { return durable_entries >= total_entries || failed; });
  }
  double elapsed = seconds_since(start);
  WalFigures figures;
  figures.cpu_seconds_per_gib =
      (cpu_seconds() - cpu_start) / (static_cast<double>(total_entries * entry_bytes) / (1 << 30));
  figures.mib_per_second = static_cast<double>(total_entries * entry_bytes) / (1 << 20) / elapsed;
  figures.entries_per_second = static_cast<double>(total_entries) / elapsed;
  figures.batches = writer.batches_written();
  figures.average_batch_kib =
      static_cast<double>(writer.bytes_written()) / 1024 / static_cast<double>(figures.batches);
  return figures;
}

}  // namespace
}  // namespace hamq::storage

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

int main(int argc, char** argv) {
  std::string dir = "bench-storage-data";
  uint64_t total_bytes = 1ull << 30;
  uint64_t entry_bytes = 1024;
  uint64_t rounds = 5;
  uint64_t many_groups = 1000;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--dir") {
      dir = argv[i + 1];
    } else if (flag == "--bytes") {
      total_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--entry-bytes") {
      entry_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rounds") {
      rounds = std::max<uint64_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
    } else if (flag == "--groups") {
      many_groups = std::max<uint64_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
    } else {
      std::fprintf(stderr,
                   "usage: hamq-storage-bench [--dir DIR] [--bytes N] [--entry-bytes N] "
                   "[--rounds N] [--groups N]\n");
      return 2;
    }
  }
  using namespace hamq::storage;
  std::printf("data in %s; %llu MiB per phase; %llu rounds of baseline, 1 group, %llu groups\n",
              dir.c_str(), static_cast<unsigned long long>(total_bytes >> 20),
              static_cast<unsigned long long>(rounds),
              static_cast<unsigned long long>(many_groups));
  // The phases alternate within each round, so that a disk whose speed drifts (a shared virtual
  // disk does) affects them alike; the medians are compared.
  std::vector<double> baseline;
  std::vector<double> one;
  std::vector<double> many;
  std::vector<double> ratio;  // per round: many groups / 1 group
  std::vector<double> one_cpu;
  std::vector<double> many_cpu;
  for (uint64_t round = 1; round <= rounds; ++round) {
    baseline.push_back(baseline_mib_per_second(dir + "/baseline", total_bytes));
    WalFigures single;
    WalFigures multiple;
    if (round % 2 == 1) {
      single = wal_run(dir + "/wal", total_bytes, 1, entry_bytes);
      multiple = wal_run(dir + "/wal", total_bytes, many_groups, entry_bytes);
    } else {
      multiple = wal_run(dir + "/wal", total_bytes, many_groups, entry_bytes);
      single = wal_run(dir + "/wal", total_bytes, 1, entry_bytes);
    }
    ratio.push_back(multiple.mib_per_second / single.mib_per_second);
    one.push_back(single.mib_per_second);
    many.push_back(multiple.mib_per_second);
    one_cpu.push_back(single.cpu_seconds_per_gib);
    many_cpu.push_back(multiple.cpu_seconds_per_gib);
    std::printf(
        "round %llu: baseline %.0f MiB/s | 1 group %.0f MiB/s (%.0f entries/s, %llu batches, "
        "%.0f KiB average, %.2f CPU s/GiB) | %llu groups %.0f MiB/s (%.0f entries/s, %llu "
        "batches, %.0f KiB average, %.2f CPU s/GiB)\n",
        static_cast<unsigned long long>(round), baseline.back(), single.mib_per_second,
        single.entries_per_second, static_cast<unsigned long long>(single.batches),
        single.average_batch_kib, single.cpu_seconds_per_gib,
        static_cast<unsigned long long>(many_groups), multiple.mib_per_second,
        multiple.entries_per_second, static_cast<unsigned long long>(multiple.batches),
        multiple.average_batch_kib, multiple.cpu_seconds_per_gib);
    std::fflush(stdout);
  }
  std::filesystem::remove_all(dir);
  double baseline_median = median(baseline);
  double one_median = median(one);
  double many_median = median(many);
  std::printf(
      "median: baseline %.0f MiB/s; 1 group %.0f MiB/s (%.0f%% of baseline, goal 80%%); "
      "%llu groups %.0f MiB/s (%.0f%% of baseline; %.0f%% of 1 group, goal 90%%)\n",
      baseline_median, one_median, 100 * one_median / baseline_median,
      static_cast<unsigned long long>(many_groups), many_median,
      100 * many_median / baseline_median, 100 * many_median / one_median);
  struct rusage usage {};
  ::getrusage(RUSAGE_SELF, &usage);
  std::printf("peak RSS %ld MiB (the largest WAL phase indexes %llu entries in memory)\n",
              usage.ru_maxrss / 1024, static_cast<unsigned long long>(total_bytes / entry_bytes));
  std::printf("median of the per-round ratios %llu groups / 1 group: %.0f%%\n",
              static_cast<unsigned long long>(many_groups), 100 * median(ratio));
  std::printf("median CPU seconds per GiB appended: 1 group %.2f, %llu groups %.2f\n",
              median(one_cpu), static_cast<unsigned long long>(many_groups), median(many_cpu));
  return 0;
}
