#include "server/metadata_store.h"

#include <spdlog/spdlog.h>

namespace hamq::server {

namespace {

// The metadata group snapshots its definitions once this many changes follow the last snapshot.
constexpr uint64_t metadata_entries_per_snapshot = 1000;

}  // namespace

Result<std::unique_ptr<MetadataStore>, std::string> MetadataStore::open(NodeLog& log) {
  std::unique_ptr<MetadataStore> store(new MetadataStore(log));
  MetadataStore* self = store.get();
  log.set_metadata_handler(NodeLog::Handler{
      .restore =
          [self](const std::string& data) {
            auto restored = broker::Definitions::from_snapshot(data);
            if (restored.ok()) {
              self->definitions_ = std::move(*restored);
            } else {
              self->failure_ = "the metadata snapshot does not decode: " + restored.error();
            }
          },
      .apply =
          [self](const raft::Entry& entry) {
            auto command = broker::decode_metadata_command(entry.data);
            if (command.ok()) {
              self->definitions_.apply(*command);
            } else {
              self->failure_ = "a metadata entry does not decode: " + command.error();
            }
          },
      .compact = [self] { self->compact(); }});
  if (!log.host().open_group(metadata_group)) {
    auto created = log.host().create_group(metadata_group, raft::ConfState{.voters = {log.self()}},
                                           broker::Definitions().snapshot());
    if (!created.ok()) return unexpected("cannot create the metadata group: " + created.error());
  }
  if (!store->settle() || !store->failure_.empty()) {
    return unexpected("cannot replay the metadata group: " +
                      (store->failure_.empty() ? std::string("the log failed") : store->failure_));
  }
  return store;
}

bool MetadataStore::settle() {
  return log_.settle([this] { return log_.caught_up(metadata_group); });
}

bool MetadataStore::record(const std::vector<broker::MetadataCommand>& commands) {
  for (const broker::MetadataCommand& command : commands) {
    auto proposed = log_.host().propose(metadata_group, broker::encode_metadata_command(command));
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
  raft::Raft* raft = log_.host().find(metadata_group);
  if (raft->applied().value >= raft->log().first_index().value + metadata_entries_per_snapshot) {
    compact();
  }
  return true;
}

void MetadataStore::compact() {
  if (auto compacted = log_.host().compact(metadata_group, definitions_.snapshot());
      !compacted.ok()) {
    spdlog::warn("cannot compact the metadata log: {}", compacted.error());
  }
}

}  // namespace hamq::server
