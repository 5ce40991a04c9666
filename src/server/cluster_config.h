// The cluster a node belongs to, as its command line states it: --cluster-seeds (the nodes a
// blank node founds a cluster with, as RabbitMQ's classic_config peer discovery) and the shared
// secret peers prove to each other (--cluster-secret-file, RabbitMQ's Erlang cookie).
//
// Seeds are NAME@HOST:PORT (HOST may be [IPv6]), comma-separated, in the same order on every
// node: a node's id is its position in the list, from 1, and the cluster's id is a digest of the
// list, so that the seeds agree on both without talking.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace hamq::server {

struct PeerAddress {
  std::string name;   // its --node-name
  std::string host;   // its --bind address
  uint16_t port = 0;  // its --cluster-port
  bool operator==(const PeerAddress&) const = default;
};

// The error names the item that is wrong and why.
Result<std::vector<PeerAddress>, std::string> parse_cluster_seeds(std::string_view text);
// 32 lowercase hex digits: the first half of SHA-256 over the list as given.
std::string seeds_cluster_id(const std::vector<PeerAddress>& seeds);
// 1 to 255 characters, none of them a comma or white space (a name in the seeds and in
// DATA_DIR/cluster-nodes).
bool valid_node_name(std::string_view name);
// The node's position in the list, from 1; nothing if it is not in it.
std::optional<uint64_t> seed_node_id(const std::vector<PeerAddress>& seeds, std::string_view name);

// The cluster's members as this node last knew them (DATA_DIR/cluster-nodes, one line per node:
// ID NAME HOST PORT), so that a node that joined a running cluster, and has no seeds, finds its
// peers again at a restart. Written whole and renamed into place on every change.
struct KnownNode {
  uint64_t id = 0;
  PeerAddress address;
  bool operator==(const KnownNode&) const = default;
};
inline constexpr const char* cluster_nodes_file = "cluster-nodes";
// Nothing when the file does not exist; errors name the file and line.
Result<std::vector<KnownNode>, std::string> load_cluster_nodes(const std::filesystem::path& path);
Result<void, std::string> save_cluster_nodes(const std::filesystem::path& path,
                                             const std::vector<KnownNode>& nodes);
// fsync of a file or a directory; the error names it.
Result<void, std::string> sync_file(const std::filesystem::path& path, bool directory);

// The secret in `path` (its first line, which must not be empty), or a new one (32 random bytes
// as hex) written there, readable by its owner only, when the file does not exist. Copy the file
// to every node of the cluster. Errors name the file.
Result<std::string, std::string> load_or_create_cluster_secret(const std::filesystem::path& path);

}  // namespace hamq::server
