// NodeIdentity: who this node is, kept in DATA_DIR/NODE (docs/formats/node.md).
//
// The cluster id and node id say which cluster the data directory belongs to and which member it
// is; the incarnation tells Raft peers that this disk is not the one they knew if it started anew
// (docs/raft.md, "A member that lost its disk"): it is the wall clock in microseconds when the
// node's log was created, so a later disk has a larger one. The node name is the one it was
// started with (--node-name); a data directory refuses to start under another name, since peers
// know the node by it.
//
// The file is written whole, fsynced and renamed into place, so a crash leaves the old file or
// the new one. It is read before the write-ahead log is opened.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/result.h"

namespace hamq::server {

struct NodeIdentity {
  std::string cluster_id;  // 32 lowercase hex digits
  std::string node_name;
  uint64_t node_id = 0;
  uint64_t incarnation = 0;
  bool operator==(const NodeIdentity&) const = default;
};

// "hamq@HOSTNAME", the default --node-name (as RabbitMQ's rabbit@HOSTNAME).
std::string default_node_name();

// The node's identity in `data_dir`: read from its NODE file, or made and written there when the
// directory is new (a new cluster of one, node id 1). `log_is_new`: the write-ahead log has no
// segment yet, so a kept identity gets a new incarnation (the log it stood for is gone).
// `now_us`: the wall clock, for a new incarnation. Errors name the file and, for a bad line, the
// line.
// `founding`: the cluster a new directory joins, as its seeds determine it (cluster_config.h);
// by default a new cluster of one (a random cluster id, node id 1).
struct Founding {
  std::string cluster_id;  // empty: a random one
  uint64_t node_id = 1;
};
// Writes the NODE file (whole, fsynced, renamed into place): a node that joined a cluster takes
// the cluster's id and the node id it was given.
Result<void, std::string> write_identity(const std::filesystem::path& data_dir,
                                         const NodeIdentity& identity);

// Counts this start of the node's process: DATA_DIR/LIFE's number plus one (1 on a new
// directory), written back (fsynced) before it is returned. Holder and connection ids carry it
// (broker::Broker::set_life), so those of a previous life are told apart. A bad file is named.
Result<uint64_t, std::string> begin_life(const std::filesystem::path& data_dir);

Result<NodeIdentity, std::string> load_or_create_identity(const std::filesystem::path& data_dir,
                                                          const std::string& node_name,
                                                          bool log_is_new, uint64_t now_us,
                                                          const Founding& founding = {});

}  // namespace hamq::server
