// Server::Impl: the node's parts and its event loop, shared by server.cc (the client listener,
// timers, startup), membership.cc (joining, forgetting, the metadata group's members) and
// management_api.cc (the management API's answers). Private to those files.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "broker/broker.h"
#include "server/cluster_config.h"
#include "server/data_dir.h"
#include "server/management.h"
#include "server/metadata_store.h"
#include "server/node_identity.h"
#include "server/node_log.h"
#include "server/peer_transport.h"
#include "server/server.h"

namespace hamq::server {

// One client socket driving one broker::Connection (server.cc).
class Session;
// The sessions the server knows of, so that shutdown can reach them.
using SessionSet = std::unordered_set<Session*>;

// Completes a join that was answered before the node stopped (membership.cc): moves its new
// identity and peers into place after the log of its life alone is removed. Each step can be done
// again after a crash.
Result<void, std::string> complete_pending_join(const std::filesystem::path& data_dir);

// The broker's relay (broker_relay.cc) over the cluster link, to nodes by their names.
class LinkRelay final : public broker::QueueRelay {
 public:
  LinkRelay(const std::map<uint64_t, std::string>& node_names,
            const std::unique_ptr<PeerTransport>& transport)
      : node_names_(node_names), transport_(transport) {}
  uint64_t link_epoch(uint64_t node) const override;
  void forward(uint64_t node, uint64_t group, std::string data) override;
  void answer(uint64_t node, uint64_t group, std::string data) override;
  // The link to the peer came up (again).
  void peer_up(const std::string& name) { epochs_[name] = ++ups_; }

 private:
  const std::map<uint64_t, std::string>& node_names_;
  const std::unique_ptr<PeerTransport>& transport_;
  std::map<std::string, uint64_t> epochs_;  // by peer name: the count of ups when it last came up
  uint64_t ups_ = 0;
};

struct Server::Impl {
  explicit Impl(ServerConfig c);

  // --- server.cc: starting, the event loop's timers, client connections, stopping

  Result<void, std::string> start_cluster();
  // The peer listener, served by a node alone too, so that nodes can join it.
  Result<void, std::string> start_transport();
  Result<void, std::string> listen();
  void start_writer();
  // A node of a cluster starts on the loop: its metadata group replays as its leader tells it
  // what is committed, then its queues' logs replay, then it serves clients.
  void advance_startup();
  void poll_startup();
  void log_restored();
  // Serves clients from now on.
  void begin_accepting();
  void accept();
  // Signal 0: stopping to start again as a cluster's member.
  void shut_down(int signal_number);
  // Polls until every session is gone, then stops the loop before the grace period ends.
  void wait_for_sessions();
  // Raft's clock: every group's elections and heartbeats count in ticks.
  void tick();
  // Queues free their messages as they go (consumed, expired), but the allocator keeps the freed
  // pages; when the bytes held have fallen well below their last high point, give them back to
  // the system, so the process's memory follows what it holds.
  void trim_memory_now_and_then();
  // One timer serves every queue's timed work (expiring messages): it is armed for the earliest
  // time the broker asks for, and re-armed whenever that time comes earlier.
  void arm_broker_timer();
  // The disk alarm: raised while the data directory's disk has less free space than the limit,
  // or since it refused a write until it has that much again. Checked every second, and after
  // writes at most every disk_check_interval (a fast publisher fills a disk in well under a
  // second).
  void check_disk_soon();
  void check_disk();
  void check_disk_every_second();

  // --- membership.cc

  // POST /api/cluster/join on a blank node: asks a member of a cluster to take it in, and on
  // success restarts the node as that cluster's member (Server::run returns true).
  void join_cluster(const std::string& target, ManagementListener::Respond respond);
  // POST /api/cluster/forget on any node: removes a node that is down for good.
  void forget_cluster_node(const std::string& name, ManagementListener::Respond respond);
  // A blank node asks this one to join the cluster (PeerTransportCallbacks::on_join).
  // `reached_at`: this node's address as the joining node reached it.
  void on_join(const cluster::Hello& joiner, const cluster::Join& join,
               const std::string& reached_at, PeerTransportCallbacks::JoinAnswerFn answer);
  // The metadata group's nodes changed: links, names and DATA_DIR/cluster-nodes follow, soon.
  void nodes_changed();
  void follow_nodes();
  // On the metadata group's leader: one membership change at a time brings the group's
  // members to the cluster's nodes (a new node as a learner, promoted to voter once it caught
  // up, up to five voters; a forgotten one removed).
  void reconcile_metadata_members();
  // On the metadata group's leader, each second: the replicated queues that had a member on a
  // forgotten node get one on another node (Broker::queue_repairs), so that they return to their
  // size without an operator.
  void repair_queue_members();
  uint64_t repair_ticks = 0;
  std::set<std::pair<std::string, std::string>> repairing;  // (vhost, queue) asked, not answered

  // --- queue_members.cc

  // The quorum-queue member paths of the management API (add, delete, grow, shrink): false if
  // the request is for none of them.
  bool handle_queue_members(const HttpRequest& request, ManagementListener::Respond& respond);
  std::optional<uint64_t> member_node_id(const std::string& name) const;
  // rabbitmq-queues quorum_status, as this node sees it (it must hold a member): one row per
  // member with its membership (voter, promotable: a learner, joining: to be added), and its
  // Raft state and log as far as this node knows them (its own; the others' if it leads).
  HttpResponse queue_status(const std::string& vhost, const std::string& name);
  // Asks the metadata group for a queue's new members, made from `expected`; `done` gets
  // nothing, or why not.
  void propose_queue_members(const std::string& vhost, const std::string& name,
                             std::vector<uint64_t> members, std::vector<uint64_t> expected,
                             std::function<void(std::optional<std::string>)> done);
  void change_queue_member(const std::string& vhost, const std::string& name,
                           const std::string& node, bool add, ManagementListener::Respond respond);
  // grow (a member on `node` for every matching queue without one; "even": only those with an
  // even number of members) or shrink (the members on `node` go, but no queue's last).
  void change_members_on(const std::string& node, bool grow, const std::string& strategy,
                         const std::string& vhost_pattern, const std::string& queue_pattern,
                         ManagementListener::Respond respond);

  // --- management_api.cc

  void handle_management(const HttpRequest& request, bool from_loopback,
                         ManagementListener::Respond respond);
  HttpResponse handle_read(const HttpRequest& request);
  // POST /api/rebalance/queues (hamqctl rebalance): this node hands over leaderships at once
  // (NodeLog::rebalance_now); answers how many, and the leaders per node as it sees them.
  HttpResponse rebalance_queues();
  nlohmann::json cluster_status();
  nlohmann::json queues();
  // The replicated queues with a member here that stopping this node would leave without a
  // majority of their members running (rabbitmq-queues check_if_node_is_quorum_critical).
  nlohmann::json quorum_critical_queues();

  std::string node_name(uint64_t id) const {
    auto it = node_names.find(id);
    return it == node_names.end() ? "node-" + std::to_string(id) : it->second;
  }
  bool node_running(uint64_t id) const {
    if (id == identity.node_id) return true;
    auto it = node_names.find(id);
    return it != node_names.end() && transport != nullptr && transport->connected(it->second);
  }

  static constexpr std::chrono::milliseconds raft_tick{raft_tick_ms};
  static constexpr uint64_t disk_check_interval_ms = 20;

  ServerConfig config;
  broker::Broker broker;
  // Before the event loop: sessions ended when it is destroyed may still record definitions
  // and propose to queues.
  std::unique_ptr<NodeLog> log;
  std::unique_ptr<MetadataStore> metadata;
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor;
  asio::signal_set signals;
  asio::steady_timer grace;
  asio::steady_timer broker_timer;
  uint64_t broker_timer_at_ms = UINT64_MAX;
  asio::steady_timer trim_timer;
  asio::steady_timer tick_timer;
  asio::steady_timer disk_timer;
  asio::steady_timer startup_timer;
  std::unique_ptr<PeerTransport> transport;  // in a cluster
  // A node's id by its name (0: none known).
  uint64_t node_id_of(const std::string& name) const {
    for (const auto& [id, known] : node_names) {
      if (known == name) return id;
    }
    return 0;
  }
  std::unique_ptr<ManagementListener> management;
  // Node names by node id: the seeds in a cluster, this node alone otherwise.
  std::map<uint64_t, std::string> node_names;
  LinkRelay relay{node_names, transport};
  bool nodes_change_posted = false;
  std::unique_ptr<PeerTransport> join_transport;  // while this node asks to join
  // Serving clients: startup is over, changes go through the metadata group.
  bool serving = false;
  // Answers that wait for a metadata change, by id: held here, not by the broker's callbacks,
  // so that they go before the event loop does.
  std::map<uint64_t, ManagementListener::Respond> waiting_answers;
  uint64_t next_waiting_answer = 1;
  bool rejoin = false;  // joined a cluster: run() returns true, the node starts again
  std::vector<KnownNode> known_nodes;  // DATA_DIR/cluster-nodes at start
  bool clustered = false;
  int startup_stage = 0;
  size_t transient_dropped = 0;
  std::chrono::steady_clock::time_point replay_started;
  bool disk_refused_write = false;
  uint64_t disk_checked_at_ms = 0;
  uint64_t memory_high_since_trim_bytes = 0;
  SessionSet sessions;
  std::optional<DataDirLock> lock;
  NodeIdentity identity;
};

}  // namespace hamq::server
