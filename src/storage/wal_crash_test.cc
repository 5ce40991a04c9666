// The crash test: many groups append, snapshot, truncate and save hard states on the
// fault-injecting file system, which crashes at random points (mid-write, between a write and its
// fsync, while segments roll, while old ones are released), tears unsynced writes, and fails
// writes with ENOSPC and fsyncs with EIO. After each crash the log is recovered and compared with
// a model of everything flush() reported durable: every reported record must be there and intact,
// and the only other thing allowed is the whole batch that was in flight at the crash.
//
// Budget: HAMQ_STORAGE_CRASH_POINTS crash points (default 3,000, for CI: a few seconds), starting
// from seed HAMQ_STORAGE_CRASH_SEED (default 1); each seed runs `crash_points_per_seed` crash
// points. A failure prints its seed; rerun just that one with
//   HAMQ_STORAGE_CRASH_SEED=<seed> HAMQ_STORAGE_CRASH_POINTS=5 build/bin/storage_crash_test
// and add HAMQ_STORAGE_CRASH_SAVE=/tmp/dir to write the failing disk there for hamq-dump.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <variant>

#include "storage/fault_file_system.h"
#include "storage/wal.h"

namespace hamq::storage {
namespace {

constexpr uint64_t crash_points_per_seed = 5;
constexpr uint64_t group_count = 12;

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* value = std::getenv(name);
  return value != nullptr ? std::strtoull(value, nullptr, 10) : fallback;
}

// The reference: what the log must hold, kept the simplest way.
struct ModelGroup {
  std::map<uint64_t, std::pair<uint64_t, std::string>> entries;  // index -> term, payload
  SnapshotMeta snapshot;
  std::string snapshot_data;
  HardState hard_state;
  uint64_t last() const { return entries.empty() ? snapshot.index.value : entries.rbegin()->first; }
  bool blank() const {
    return entries.empty() && snapshot == SnapshotMeta{} && snapshot_data.empty() &&
           hard_state == HardState{};
  }
};

struct AppendOp {
  GroupId group;
  std::vector<Entry> entries;
};
struct HardStateOp {
  GroupId group;
  HardState state;
};
struct SnapshotOp {
  GroupId group;
  SnapshotMeta meta;
  SnapshotMode mode;
  std::string data;
};
struct RemoveOp {
  GroupId group;
};
using Op = std::variant<AppendOp, HardStateOp, SnapshotOp, RemoveOp>;

using Model = std::map<uint64_t, ModelGroup>;

void apply(Model& model, const Op& op) {
  if (const auto* append = std::get_if<AppendOp>(&op)) {
    ModelGroup& group = model[append->group.value];
    uint64_t first = append->entries.front().index.value;
    group.entries.erase(group.entries.lower_bound(first), group.entries.end());
    for (const Entry& entry : append->entries) {
      group.entries[entry.index.value] = {entry.term.value, entry.payload};
    }
  } else if (const auto* hard = std::get_if<HardStateOp>(&op)) {
    model[hard->group.value].hard_state = hard->state;
  } else if (const auto* snapshot = std::get_if<SnapshotOp>(&op)) {
    ModelGroup& group = model[snapshot->group.value];
    uint64_t index = snapshot->meta.index.value;
    if (snapshot->mode == SnapshotMode::compact_prefix && index < group.last()) {
      group.entries.erase(group.entries.begin(), group.entries.upper_bound(index));
    } else {
      group.entries.clear();
    }
    group.snapshot = snapshot->meta;
    group.snapshot_data = snapshot->data;
  } else if (const auto* remove = std::get_if<RemoveOp>(&op)) {
    model.erase(remove->group.value);
  }
}

// Empty when the log holds exactly `model`; otherwise the first difference.
std::string compare(const Wal& wal, const Model& model) {
  std::vector<GroupId> expected_groups;
  for (const auto& [id, group] : model) {
    if (!group.blank()) expected_groups.push_back(GroupId{id});
  }
  if (wal.groups() != expected_groups) return "the set of groups differs";
  for (const auto& [id, group] : model) {
    GroupId group_id{id};
    std::string name = "group " + std::to_string(id) + ": ";
    if (auto failure = wal.group_failure(group_id)) return name + "failed: " + *failure;
    if (wal.first_index(group_id) != group.snapshot.index + 1) return name + "first index";
    if (wal.last_index(group_id).value != group.last()) {
      return name + "last index " + std::to_string(wal.last_index(group_id).value) + " expected " +
             std::to_string(group.last());
    }
    auto hard = wal.hard_state(group_id);
    if (!hard || *hard != group.hard_state) return name + "hard state";
    auto meta = wal.snapshot_meta(group_id);
    if (!meta || *meta != group.snapshot) return name + "snapshot meta";
    auto data = wal.snapshot_data(group_id);
    if (!data || *data != group.snapshot_data) return name + "snapshot data";
    std::vector<Entry> entries;
    auto read = wal.entries(group_id, group.snapshot.index + 1, LogIndex{group.last() + 1},
                            UINT64_MAX, entries);
    if (!read) return name + "entries: " + read.error().detail;
    if (entries.size() != group.entries.size()) return name + "entry count";
    size_t i = 0;
    for (const auto& [index, value] : group.entries) {
      const Entry& entry = entries[i++];
      if (entry.index.value != index || entry.term.value != value.first ||
          entry.payload != value.second) {
        return name + "entry " + std::to_string(index) + " differs";
      }
    }
  }
  return {};
}

// One seed: a sequence of crash points on one simulated disk.
class CrashRun {
 public:
  explicit CrashRun(uint64_t seed) : random_(seed), fs_(seed) {
    options_.segment_size_bytes_target = 1024 * (1 + random_() % 16);
    options_.carry_forward_bytes_max = 512 * (1 + random_() % 8);
  }

  // Runs until the next crash, crashes, recovers and checks. Returns a failure or empty.
  std::string crash_point() {
    if (!wal_) {
      auto opened = Wal::open(fs_, "wal", options_);
      if (!opened) return "open: " + opened.error().detail;
      wal_ = std::move(opened.value());
      reset_submitted_view();
    }
    uint64_t steps = 20 + random_() % 200;
    uint64_t stop_at_step = random_() % steps;
    for (uint64_t step = 0; step < steps && !stopped_; ++step) {
      if (step == stop_at_step) fs_.stop_after(random_() % 12);
      if (random_() % 5 == 0) {
        if (auto failed = flush(); !failed.empty()) return failed;
      } else {
        submit_random();
      }
    }
    if (!stopped_) fs_.stop_after(random_() % 6);
    while (!stopped_) {
      submit_random();
      if (auto failed = flush(); !failed.empty()) return failed;
    }
    // The crash.
    std::vector<Op> in_flight = std::move(in_flight_);
    if (wal_) {
      SpaceStats space = wal_->space();
      stats_.segments_deleted += space.segments_deleted;
      stats_.carried_forward_bytes += space.carried_forward_bytes;
    }
    wal_.reset();
    fs_.crash({.tear_unsynced = random_() % 4 != 0});
    RecoveryReport report;
    auto opened = Wal::open(fs_, "wal", options_, &report);
    if (!opened) return "recovery: " + opened.error().detail;
    wal_ = std::move(opened.value());
    stats_.torn_tails += report.torn_bytes_cut > 0 ? 1 : 0;
    stats_.sealed_segments_read += report.sealed_segments;
    stats_.segments_deleted += report.segments_deleted;
    std::string without = compare(*wal_, durable_);
    if (!without.empty()) {
      Model with = durable_;
      for (const Op& op : in_flight) apply(with, op);
      std::string with_batch = compare(*wal_, with);
      if (!with_batch.empty()) {
        return "after recovery, without the in-flight batch: " + without +
               "; with it: " + with_batch;
      }
      durable_ = std::move(with);
      ++stats_.in_flight_batches_recovered;
    }
    pending_.clear();
    retry_.clear();
    stopped_ = false;
    reset_submitted_view();
    return {};
  }

  struct Stats {
    uint64_t flushes_ok = 0;
    uint64_t no_space = 0;
    uint64_t torn_tails = 0;
    uint64_t in_flight_batches_recovered = 0;
    uint64_t segments_deleted = 0;
    uint64_t carried_forward_bytes = 0;
    uint64_t sealed_segments_read = 0;
  };
  const Stats& stats() const { return stats_; }

  // Writes the simulated disk's segment files to `dir` (a real directory) for hamq-dump.
  void save_disk(const std::string& dir) {
    std::filesystem::create_directories(dir);
    auto names = fs_.list("wal");
    if (!names) return;
    for (const std::string& name : *names) {
      std::ofstream(dir + "/" + name, std::ios::binary) << *fs_.contents("wal/" + name);
    }
  }

 private:
  struct Submitted {
    uint64_t last = 0;
    uint64_t snapshot = 0;
    uint64_t term = 1;
  };

  void reset_submitted_view() {
    submitted_.clear();
    for (uint64_t id = 1; id <= group_count; ++id) {
      Submitted& view = submitted_[id];
      view.last = wal_->last_index(GroupId{id}).value;
      view.snapshot = wal_->first_index(GroupId{id}).value - 1;
      auto term = wal_->term(GroupId{id}, LogIndex{view.last});
      view.term = std::max<uint64_t>(term ? term->value : 1, 1) + 1;
    }
  }

  std::string payload(uint64_t size) {
    std::string bytes(size, '\0');
    for (char& c : bytes) c = static_cast<char>('a' + random_() % 26);
    return bytes;
  }

  void submit_random() {
    GroupId group{1 + random_() % group_count};
    Submitted& view = submitted_[group.value];
    uint64_t choice = random_() % 100;
    Op op;
    if (choice < 70) {
      uint64_t back = view.last > view.snapshot
                          ? random_() % std::min<uint64_t>(4, view.last - view.snapshot + 1)
                          : 0;
      if (back > 0) ++view.term;  // a new leader's conflicting suffix
      uint64_t first = view.last + 1 - back;
      uint64_t count = 1 + random_() % 6;
      AppendOp append{group, {}};
      for (uint64_t i = 0; i < count; ++i) {
        append.entries.push_back(Entry{Term{view.term}, LogIndex{first + i},
                                       static_cast<uint8_t>(random_() % 2),
                                       payload(random_() % 400)});
      }
      op = append;
    } else if (choice < 82) {
      op = HardStateOp{group, HardState{Term{view.term}, random_() % 3, LogIndex{view.last}}};
    } else if (choice < 97) {
      bool replace = random_() % 4 == 0 || view.last == view.snapshot;
      uint64_t index = replace ? view.last + random_() % 4
                               : view.snapshot + 1 + random_() % (view.last - view.snapshot);
      op = SnapshotOp{group, SnapshotMeta{LogIndex{index}, Term{view.term}},
                      replace ? SnapshotMode::replace_log : SnapshotMode::compact_prefix,
                      payload(random_() % 300)};
    } else {
      op = RemoveOp{group};
    }
    if (!submit(op)) return;
    // Mirror what the submit did to the group's shape.
    if (const auto* append = std::get_if<AppendOp>(&op)) {
      view.last = append->entries.back().index.value;
    } else if (const auto* snapshot = std::get_if<SnapshotOp>(&op)) {
      view.snapshot = snapshot->meta.index.value;
      if (snapshot->mode == SnapshotMode::replace_log || view.last < view.snapshot) {
        view.last = view.snapshot;
      }
    } else if (std::holds_alternative<RemoveOp>(op)) {
      view = Submitted{0, 0, view.term};
    }
    pending_.push_back(std::move(op));
    if (random_() % 40 == 0) fs_.fail_next_write(Errc::no_space);
    if (random_() % 200 == 0) fs_.fail_next_sync();
  }

  bool submit(const Op& op) {
    Result<void, Error> submitted = Ok{};
    if (const auto* append = std::get_if<AppendOp>(&op)) {
      std::vector<EntryInput> inputs;
      for (const Entry& entry : append->entries) {
        inputs.push_back(EntryInput{entry.term, entry.index, entry.kind, entry.payload});
      }
      submitted = wal_->append(append->group, inputs);
    } else if (const auto* hard = std::get_if<HardStateOp>(&op)) {
      submitted = wal_->save_hard_state(hard->group, hard->state);
    } else if (const auto* snapshot = std::get_if<SnapshotOp>(&op)) {
      submitted =
          wal_->save_snapshot(snapshot->group, snapshot->meta, snapshot->mode, snapshot->data);
    } else {
      submitted = wal_->remove_group(std::get<RemoveOp>(op).group);
    }
    if (!submitted) {
      HAMQ_VERIFY(submitted.error().code == Errc::log_failed, "unexpected submit error");
      stopped_ = true;
    }
    return submitted.ok();
  }

  std::string flush() {
    bool retrying = !retry_.empty();
    in_flight_ = retrying ? retry_ : pending_;
    auto flushed = wal_->flush();
    if (!flushed) {
      if (flushed.error().code == Errc::no_space && !wal_->failed()) {
        ++stats_.no_space;
        if (!retrying) {
          retry_ = std::move(pending_);
          pending_.clear();
        }
        return {};
      }
      stopped_ = true;  // log_failed, or the machine is down: crash next
      return {};
    }
    ++stats_.flushes_ok;
    for (const Op& op : in_flight_) apply(durable_, op);
    in_flight_.clear();
    if (retrying) {
      retry_.clear();
    } else {
      pending_.clear();
    }
    for (const GroupProgress& progress : flushed->progress) {
      if (progress.entries_durable_to &&
          progress.entries_durable_to->value != durable_[progress.group.value].last()) {
        return "flush reported group " + std::to_string(progress.group.value) + " durable to " +
               std::to_string(progress.entries_durable_to->value) + ", the model says " +
               std::to_string(durable_[progress.group.value].last());
      }
    }
    return {};
  }

  std::mt19937_64 random_;
  FaultFileSystem fs_;
  WalOptions options_;
  std::unique_ptr<Wal> wal_;
  Model durable_;
  std::vector<Op> pending_;
  std::vector<Op> retry_;
  std::vector<Op> in_flight_;
  std::map<uint64_t, Submitted> submitted_;
  bool stopped_ = false;
  Stats stats_;
};

TEST(WalCrash, EveryEntryReportedDurableSurvivesRandomCrashes) {
  uint64_t points = env_or("HAMQ_STORAGE_CRASH_POINTS", 3000);
  uint64_t first_seed = env_or("HAMQ_STORAGE_CRASH_SEED", 1);
  uint64_t done = 0;
  CrashRun::Stats total;
  for (uint64_t seed = first_seed; done < points; ++seed) {
    CrashRun run(seed);
    for (uint64_t i = 0; i < crash_points_per_seed && done < points; ++i, ++done) {
      std::string failure = run.crash_point();
      if (!failure.empty() && std::getenv("HAMQ_STORAGE_CRASH_SAVE") != nullptr) {
        run.save_disk(std::getenv("HAMQ_STORAGE_CRASH_SAVE"));
      }
      ASSERT_TRUE(failure.empty())
          << "seed " << seed << ", crash point " << i + 1 << ": " << failure
          << "\nreproduce: HAMQ_STORAGE_CRASH_SEED=" << seed
          << " HAMQ_STORAGE_CRASH_POINTS=" << crash_points_per_seed << " storage_crash_test";
    }
    total.flushes_ok += run.stats().flushes_ok;
    total.no_space += run.stats().no_space;
    total.torn_tails += run.stats().torn_tails;
    total.in_flight_batches_recovered += run.stats().in_flight_batches_recovered;
    total.segments_deleted += run.stats().segments_deleted;
    total.carried_forward_bytes += run.stats().carried_forward_bytes;
    total.sealed_segments_read += run.stats().sealed_segments_read;
  }
  std::printf(
      "crash points: %llu (seeds %llu..%llu); flushes reported durable: %llu; ENOSPC refusals: "
      "%llu; torn tails cut: %llu; in-flight batches found whole: %llu; segments deleted: %llu; "
      "bytes carried forward: %llu; sealed segments recovered through their index: %llu\n",
      static_cast<unsigned long long>(done), static_cast<unsigned long long>(first_seed),
      static_cast<unsigned long long>(first_seed + (done - 1) / crash_points_per_seed),
      static_cast<unsigned long long>(total.flushes_ok),
      static_cast<unsigned long long>(total.no_space),
      static_cast<unsigned long long>(total.torn_tails),
      static_cast<unsigned long long>(total.in_flight_batches_recovered),
      static_cast<unsigned long long>(total.segments_deleted),
      static_cast<unsigned long long>(total.carried_forward_bytes),
      static_cast<unsigned long long>(total.sealed_segments_read));
  EXPECT_GT(total.flushes_ok, done);  // the test does exercise the log
}

}  // namespace
}  // namespace hamq::storage
