// MetadataStore: the metadata Raft group on the node's log (server/node_log.h), which holds the
// broker's definitions (broker/definitions.h). The broker proposes each change through it and
// applies each committed entry, in log order (Broker::apply_definition); the group's snapshot
// is the broker's model (Broker::current_definitions).
//
// Thread: the event loop's. Nothing waits on the loop: a change's reply goes when its entry is
// applied. Only open() settles, at start-up, before the loop runs.
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
  // Starts (creating) the metadata group on `log` and replays it into `broker`, settling on this
  // thread. The error says what failed.
  // `self`: this node, which a new group records as its only member.
  static Result<std::unique_ptr<MetadataStore>, std::string> open(NodeLog& log,
                                                                  broker::Broker& broker,
                                                                  const broker::ClusterNode& self);
  // The same without waiting (a cluster: the group replays as its leader tells it what is
  // committed; NodeLog::member_caught_up says when). A new group is founded with `founders` as
  // its voters and first nodes; with none, this node joined a running cluster: its member starts
  // empty and waits for the leader's snapshot. A group whose log here was found damaged is taken
  // from the other nodes when `peers` (it knows some), as a member that joined.
  static Result<std::unique_ptr<MetadataStore>, std::string> start(
      NodeLog& log, broker::Broker& broker, const std::vector<broker::ClusterNode>& founders,
      bool peers);
  // The replay found a snapshot or entry it could not apply; empty if none.
  const std::string& failure() const { return failure_; }

  void propose(const broker::MetadataCommand& command, Placed placed) override;

 private:
  MetadataStore(NodeLog& log, broker::Broker& broker) : log_(log), broker_(broker) {}
  // The definitions replace the metadata group's log up to what it applied (at `index`, from
  // inside the apply of that entry).
  void compact();
  void compact_at(uint64_t index);

  NodeLog& log_;
  broker::Broker& broker_;
  std::string failure_;  // of the replay at open
  uint64_t applied_since_snapshot_ = 0;
  uint64_t last_snapshot_definitions_ = 0;  // how many definitions the last snapshot held
  std::string snapshot_now();
};

}  // namespace hamq::server
