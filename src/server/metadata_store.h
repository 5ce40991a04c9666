// MetadataStore: the broker's durable definitions (broker/definitions.h) kept in the metadata
// Raft group on the node's log (server/node_log.h). On a single node the group has one member: a
// change is durable once its entry is committed, which is once it is fsynced.
//
// Thread: the event loop's. record() waits for the entries on the calling thread: definitions
// change rarely, and a declare's reply must not leave before the declaration is durable.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "broker/broker.h"
#include "common/result.h"
#include "server/node_log.h"

namespace hamq::server {

class MetadataStore final : public broker::DefinitionStore {
 public:
  // Starts (creating) the metadata group on `log` and replays it. The error says what failed.
  static Result<std::unique_ptr<MetadataStore>, std::string> open(NodeLog& log);

  const broker::Definitions& definitions() const { return definitions_; }
  bool record(const std::vector<broker::MetadataCommand>& commands) override;

 private:
  explicit MetadataStore(NodeLog& log) : log_(log) {}
  // Waits until the metadata group has applied everything it was given (or the log failed).
  bool settle();
  // The definitions replace the metadata group's log up to what it applied.
  void compact();

  NodeLog& log_;
  broker::Definitions definitions_;
  std::string failure_;
};

}  // namespace hamq::server
