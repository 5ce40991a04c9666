#include "server/metadata_store.h"

#include <spdlog/spdlog.h>

namespace hamq::server {

namespace {

// A bound on the rounds of flushing one change may take (a few on a single node).
constexpr int settle_rounds_max = 100;
// The metadata group snapshots its definitions once this many changes follow the last snapshot.
constexpr uint64_t metadata_entries_per_snapshot = 1000;

}  // namespace

MetadataStore::~MetadataStore() = default;

Result<std::unique_ptr<MetadataStore>, std::string> MetadataStore::open(
    const std::filesystem::path& data_dir) {
  std::unique_ptr<MetadataStore> store(new MetadataStore());
  store->fs_ = storage::make_posix_file_system();
  storage::RecoveryReport report;
  auto wal = storage::Wal::open(*store->fs_, (data_dir / "wal").string(), {}, &report);
  if (!wal.ok()) {
    return unexpected("cannot open the write-ahead log in " + (data_dir / "wal").string() + ": " +
                      wal.error().detail);
  }
  store->wal_ = std::move(wal.value());
  MetadataStore* self = store.get();
  store->host_ = std::make_unique<replication::GroupHost>(
      *store->wal_, raft::NodeId{1}, 1, raft::Config{},
      replication::GroupHostCallbacks{
          .send = [](const raft::Message&) {},  // one member: nobody to tell
          .restore =
              [self](raft::GroupId group, const raft::SnapshotMeta&, const std::string& data) {
                if (group != metadata_group) return;
                auto restored = broker::Definitions::from_snapshot(data);
                if (restored.ok()) {
                  self->definitions_ = std::move(*restored);
                } else {
                  self->failure_ = "the metadata snapshot does not decode: " + restored.error();
                }
              },
          .apply =
              [self](raft::GroupId group, const raft::Entry& entry) {
                if (group != metadata_group || entry.type != raft::EntryType::normal ||
                    entry.data.empty()) {
                  return;
                }
                auto command = broker::decode_metadata_command(entry.data);
                if (command.ok()) {
                  self->definitions_.apply(*command);
                } else {
                  self->failure_ = "a metadata entry does not decode: " + command.error();
                }
              }});
  bool exists = false;
  for (storage::GroupId group : store->wal_->groups())
    exists |= group.value == metadata_group.value;
  if (exists) {
    store->host_->open_existing_groups();
  } else {
    auto created =
        store->host_->create_group(metadata_group, raft::ConfState{.voters = {raft::NodeId{1}}},
                                   broker::Definitions().snapshot());
    if (!created.ok()) return unexpected("cannot create the metadata group: " + created.error());
  }
  if (!store->settle() || !store->failure_.empty()) {
    return unexpected("cannot replay the metadata group: " +
                      (store->failure_.empty() ? std::string("the log failed") : store->failure_));
  }
  spdlog::info("write-ahead log: {} segment(s), {} record(s) read, {} torn byte(s) cut",
               report.segments, report.records, report.torn_bytes_cut);
  return store;
}

bool MetadataStore::settle() {
  raft::Raft* raft = host_->find(metadata_group);
  if (raft == nullptr) return false;
  for (int round = 0; round < settle_rounds_max; ++round) {
    host_->process();
    bool pending = wal_->has_pending();
    if (!pending && raft->role() == raft::Role::leader && raft->applied() == raft->committed() &&
        raft->committed() == raft->log().last_index()) {
      return true;
    }
    if (pending && !host_->flush_now().ok()) return false;
    if (host_->failed()) return false;
  }
  return false;
}

bool MetadataStore::record(const std::vector<broker::MetadataCommand>& commands) {
  for (const broker::MetadataCommand& command : commands) {
    auto proposed = host_->propose(metadata_group, broker::encode_metadata_command(command));
    if (!proposed.ok()) {
      spdlog::error("cannot record a definition: {}", raft::propose_error_name(proposed.error()));
      return false;
    }
  }
  if (!settle()) {
    spdlog::error("cannot make definitions durable: the write-ahead log failed");
    return false;
  }
  // Now and then the whole state replaces the log that built it, so a restart reads little.
  raft::Raft* raft = host_->find(metadata_group);
  if (raft->applied().value >= raft->log().first_index().value + metadata_entries_per_snapshot) {
    if (auto compacted = host_->compact(metadata_group, definitions_.snapshot());
        !compacted.ok() || !settle()) {
      spdlog::warn("cannot compact the metadata log; it keeps growing");
    }
  }
  return true;
}

}  // namespace hamq::server
