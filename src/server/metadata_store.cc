#include "server/metadata_store.h"

#include <spdlog/spdlog.h>

namespace hamq::server {

namespace {

// The metadata group snapshots its definitions once this many changes follow the last snapshot,
// or as many as the last snapshot held definitions if that is more: a snapshot costs what the
// model holds, so with 50,000 queues one per 1,000 changes would make every change cost O(n).
constexpr uint64_t metadata_entries_per_snapshot = 1000;

}  // namespace

Result<std::unique_ptr<MetadataStore>, std::string> MetadataStore::open(
    NodeLog& log, broker::Broker& broker, const broker::ClusterNode& self) {
  auto started = start(log, broker, {self}, false);
  if (!started.ok()) return started;
  std::unique_ptr<MetadataStore> store = std::move(started.value());
  if (!log.settle([&log] { return log.caught_up(metadata_group); }) || !store->failure_.empty()) {
    return unexpected("cannot replay the metadata group: " +
                      (store->failure_.empty() ? std::string("the log failed") : store->failure_));
  }
  return store;
}

Result<std::unique_ptr<MetadataStore>, std::string> MetadataStore::start(
    NodeLog& log, broker::Broker& broker, const std::vector<broker::ClusterNode>& founders,
    bool peers) {
  std::unique_ptr<MetadataStore> store(new MetadataStore(log, broker));
  MetadataStore* self = store.get();
  log.set_metadata_handler(NodeLog::Handler{
      .restore =
          [self](const std::string& data) {
            auto restored = self->broker_.restore_definitions(data);
            if (!restored.ok()) {
              self->failure_ = "the metadata snapshot does not restore: " + restored.error();
            }
          },
      .apply =
          [self](const raft::Entry& entry) {
            if (entry.data.empty()) {  // a new leader's first entry
              self->broker_.definition_entry_passed({entry.term.value, entry.index.value});
              return;
            }
            auto command = broker::decode_metadata_command(entry.data);
            if (!command.ok()) {
              // Every node skips it alike: the model stays the same on each.
              spdlog::error("metadata entry {} does not decode and is skipped: {}",
                            entry.index.value, command.error());
              self->failure_ = "a metadata entry does not decode: " + command.error();
              return;
            }
            // A refused change (an inequivalent redeclare, ...) is an answer, not a failure.
            (void)self->broker_.apply_definition(*command, {entry.term.value, entry.index.value});
            // Now and then the whole state replaces the log that built it, so a restart reads
            // little.
            if (++self->applied_since_snapshot_ >=
                std::max(metadata_entries_per_snapshot, self->last_snapshot_definitions_)) {
              self->compact_at(entry.index.value);
            }
          },
      .compact = [self] { self->compact(); }});
  if (log.host().open_group(metadata_group)) return store;
  if (log.damaged(metadata_group.value) && peers) {
    log.rebuild_group(metadata_group.value);  // joins again once the drop is durable
    return store;
  }
  if (founders.empty()) {
    log.host().join_group(metadata_group);
    return store;
  }
  // Every seed founds it alike: the same members, the same model at index 1 (the seeds as the
  // cluster's first nodes).
  broker::Definitions founding;
  raft::ConfState conf;
  for (const broker::ClusterNode& node : founders) {
    founding.apply(broker::AddNode{node});
    conf.voters.push_back(raft::NodeId{node.id});
  }
  auto created = log.host().found_group(metadata_group, conf, founding.snapshot());
  if (!created.ok()) return unexpected("cannot create the metadata group: " + created.error());
  return store;
}

void MetadataStore::propose(const broker::MetadataCommand& command, Placed placed) {
  log_.propose_anywhere(metadata_group.value, broker::encode_metadata_command(command),
                        std::move(placed));
}

std::string MetadataStore::snapshot_now() {
  broker::Definitions definitions = broker_.current_definitions();
  last_snapshot_definitions_ =
      definitions.exchanges().size() + definitions.queues().size() + definitions.bindings().size();
  return definitions.snapshot();
}

void MetadataStore::compact() {
  applied_since_snapshot_ = 0;
  if (auto compacted = log_.host().compact(metadata_group, snapshot_now()); !compacted.ok()) {
    spdlog::warn("cannot compact the metadata log: {}", compacted.error());
  }
}

void MetadataStore::compact_at(uint64_t index) {
  applied_since_snapshot_ = 0;
  if (auto compacted = log_.host().compact_at(metadata_group, raft::LogIndex{index}, snapshot_now(),
                                              raft::LogIndex{0});
      !compacted.ok()) {
    spdlog::warn("cannot compact the metadata log: {}", compacted.error());
  }
}

}  // namespace hamq::server
