// Server: the runtime shell around the pure protocol core. It owns the event loop, the listening
// socket, the client sockets, timers and signals, and drives one broker::Connection per client.
//
// Thread: everything runs on the one thread that calls run(). (Several event loops, each owning
// a share of the connections and queues, come with the broker; see docs/ARCHITECTURE.md.)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "broker/connection.h"
#include "common/result.h"
#include "server/cluster_config.h"

namespace hamq::server {

struct ServerConfig {
  std::string bind_address = "::";
  uint16_t port = 5672;  // 0: any free port
  std::filesystem::path data_dir = "hamq-data";
  std::string node_name;  // --node-name; empty: default_node_name()
  // The cluster: the peer listener's port, and the nodes a blank node founds a cluster with
  // (cluster_config.h). No seeds, or only this node: a cluster of one.
  uint16_t cluster_port = 25672;
  std::vector<PeerAddress> cluster_seeds;
  // The shared secret peers prove (made there on first start when missing); empty:
  // DATA_DIR/cluster-secret.
  std::filesystem::path cluster_secret_file;
  // The management listener (hamqctl, the management API), on the --bind address; 0: any free
  // port.
  uint16_t management_port = 15672;
  broker::ConnectionConfig connection;
  // Bytes of messages held in queues above which publishers are blocked; 0: 40% of the
  // machine's memory, as RabbitMQ's default vm_memory_high_watermark.
  uint64_t memory_high_watermark_bytes = 0;
  // Free space on the data directory's disk below which publishers are blocked (RabbitMQ's
  // disk_free_limit, 50 MB by default), checked every second.
  uint64_t disk_free_limit_bytes = 50'000'000;
  // A durable queue snapshots its state once this much of its log was applied since the last.
  uint64_t queue_snapshot_log_bytes = broker::queue_snapshot_log_bytes_default;
  // How much of its oldest messages a durable queue's snapshot carries with their bodies.
  uint64_t queue_snapshot_carried_bytes = broker::queue_snapshot_carried_bytes_default;
  // After a shutdown signal, how long open connections get to answer connection.close.
  uint64_t shutdown_grace_ms = 5'000;
  // A node unreachable this long (as the metadata leader sees it) loses its members of replicated
  // queues to other nodes, as a forgotten node does; 0: only forgotten nodes do.
  uint64_t member_repair_after_s = 0;
};

class Server {
 public:
  explicit Server(ServerConfig config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Locks the data directory and starts listening. The error says what failed, for the operator.
  Result<void, std::string> start();
  // The port actually listened on (after start).
  uint16_t port() const;
  // Serves until SIGTERM or SIGINT, then closes every connection with 320 CONNECTION_FORCED.
  // Returns true when the node stopped because it joined a cluster (hamqctl join_cluster): the
  // caller starts a new Server on the same configuration, which runs as the cluster's member.
  bool run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace hamq::server
