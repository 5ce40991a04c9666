// MetadataStore: the broker's durable definitions (broker/definitions.h) kept in the metadata
// Raft group, on the node's write-ahead log in DATA_DIR/wal. On a single node the group has one
// member: a change is durable once its entry is committed, which is once it is fsynced.
//
// Thread: the event loop's. record() flushes on the calling thread: definitions change rarely,
// and a declare's reply must not leave before the declaration is durable.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "common/result.h"
#include "replication/group_host.h"
#include "storage/file_system.h"
#include "storage/wal.h"

namespace hamq::server {

// The metadata group's id; queue groups will take the ids after it.
inline constexpr raft::GroupId metadata_group{1};

class MetadataStore final : public broker::DefinitionStore {
 public:
  // Opens (creating) the log and replays the metadata group. The error says what failed.
  static Result<std::unique_ptr<MetadataStore>, std::string> open(
      const std::filesystem::path& data_dir);
  ~MetadataStore() override;

  const broker::Definitions& definitions() const { return definitions_; }
  bool record(const std::vector<broker::MetadataCommand>& commands) override;

 private:
  MetadataStore() = default;
  // Flushes until the metadata group has applied everything it was given (or the log failed).
  bool settle();

  std::unique_ptr<storage::FileSystem> fs_;
  std::unique_ptr<storage::Wal> wal_;
  std::unique_ptr<replication::GroupHost> host_;
  broker::Definitions definitions_;
  std::string failure_;
};

}  // namespace hamq::server
