// Membership: a blank node joins a cluster, a node that is gone for good is forgotten, and the
// metadata group's members follow the cluster's nodes (docs/ARCHITECTURE.md, "The cluster").
#include <spdlog/spdlog.h>

#include <algorithm>
#include <set>

#include "server/server_impl.h"

namespace hamq::server {
namespace {

// The metadata group's voters at most; further nodes follow it as learners.
constexpr size_t metadata_voters_max = 5;
// A join answered and not yet completed: the node's new identity and peers, moved into place
// at the next start (complete_pending_join) after the log of its life alone is removed.
constexpr const char* pending_join_dir = "join";

Result<void, std::string> record_join(const std::filesystem::path& data_dir,
                                      const NodeIdentity& identity,
                                      const cluster::JoinAnswer& answer) {
  auto staging = data_dir / (std::string(pending_join_dir) + ".tmp");
  std::error_code ec;
  std::filesystem::remove_all(staging, ec);
  std::filesystem::create_directories(staging, ec);
  if (ec) return unexpected("cannot create " + staging.string() + ": " + ec.message());
  NodeIdentity joined = identity;
  joined.cluster_id = answer.cluster_id;
  joined.node_id = answer.node_id;
  if (auto written = write_identity(staging, joined); !written.ok()) return written;
  std::vector<KnownNode> nodes;
  for (const cluster::LinkMember& member : answer.members) {
    nodes.push_back(KnownNode{member.id, PeerAddress{member.name, member.host, member.port}});
  }
  if (auto saved = save_cluster_nodes(staging / cluster_nodes_file, nodes); !saved.ok()) {
    return saved;
  }
  std::filesystem::rename(staging, data_dir / pending_join_dir, ec);
  if (ec) return unexpected("cannot rename " + staging.string() + ": " + ec.message());
  return sync_file(data_dir, true);
}

}  // namespace

Result<void, std::string> complete_pending_join(const std::filesystem::path& data_dir) {
  auto pending = data_dir / pending_join_dir;
  std::error_code ec;
  if (!std::filesystem::exists(pending, ec)) return Ok{};
  spdlog::info("completing the join recorded in {}", pending.string());
  std::filesystem::remove_all(data_dir / "wal", ec);
  if (ec) return unexpected("cannot remove " + (data_dir / "wal").string() + ": " + ec.message());
  for (const char* name : {"NODE", cluster_nodes_file}) {
    if (!std::filesystem::exists(pending / name, ec)) continue;
    std::filesystem::rename(pending / name, data_dir / name, ec);
    if (ec) return unexpected("cannot move " + (pending / name).string() + ": " + ec.message());
  }
  std::filesystem::remove_all(pending, ec);
  return Ok{};
}

void Server::Impl::nodes_changed() {
  // Outside the apply that changed them: dropping a link reports it to the groups, whose
  // callbacks may come back into the broker.
  if (nodes_change_posted) return;
  nodes_change_posted = true;
  asio::post(io, [this] {
    nodes_change_posted = false;
    follow_nodes();
  });
}

void Server::Impl::follow_nodes() {
  const auto& nodes = broker.cluster_nodes();
  std::map<uint64_t, std::string> names;
  std::vector<KnownNode> known;
  std::set<std::string> live;
  for (const auto& [id, node] : nodes) {
    if (!node.forgotten) live.insert(node.name);
  }
  for (const auto& [id, node] : nodes) {
    PeerAddress address{node.name, node.host, node.port};
    if (node.forgotten) {
      // (A forgotten name a new node took again stays linked.)
      if (transport != nullptr && !live.contains(node.name)) transport->remove_peer(node.name);
      continue;
    }
    names[id] = node.name;
    known.push_back(KnownNode{id, address});
    if (transport != nullptr && node.name != identity.node_name) transport->add_peer(address);
  }
  if (names.empty()) return;  // a log from before nodes were recorded: the seeds stay
  // A node that was alone is in a cluster once another joined it.
  if (names.size() > 1) broker.set_clustered(true);
  node_names = names;
  log->set_peer_names(std::move(names));
  auto saved = save_cluster_nodes(config.data_dir / cluster_nodes_file, known);
  if (!saved.ok()) spdlog::warn("cannot record the cluster's nodes: {}", saved.error());
}

void Server::Impl::reconcile_metadata_members() {
  if (transport == nullptr) return;
  const raft::Raft* leader = log->host().peek(metadata_group);
  if (leader == nullptr || leader->role() != raft::Role::leader) return;
  std::set<uint64_t> wanted;
  for (const auto& [id, node] : broker.cluster_nodes()) {
    if (!node.forgotten) wanted.insert(id);
  }
  if (wanted.empty()) return;  // nodes not recorded (a log from before): nothing to reconcile
  const raft::ConfState& conf = leader->conf();
  std::optional<raft::ConfChange> change;
  for (const auto& members : {conf.voters, conf.learners}) {
    for (raft::NodeId member : members) {
      if (!wanted.contains(member.value) && member != leader->id() && !change) {
        change = raft::ConfChange{raft::ConfChangeType::remove_node, member};
      }
    }
  }
  for (uint64_t id : wanted) {
    raft::NodeId node{id};
    if (change) break;
    if (!raft::is_voter(conf, node) && !raft::is_learner(conf, node)) {
      change = raft::ConfChange{raft::ConfChangeType::add_learner, node};
    } else if (raft::is_learner(conf, node) && conf.voters.size() < metadata_voters_max) {
      // Promoted once it holds what is committed: it does not slow the group down meanwhile.
      const raft::Progress* progress = leader->progress(node);
      if (progress != nullptr && progress->match >= leader->committed()) {
        change = raft::ConfChange{raft::ConfChangeType::add_voter, node};
      }
    }
  }
  if (!change) return;
  raft::Raft* raft = log->host().find(metadata_group);
  auto proposed = raft->propose_conf_change(*change);
  if (proposed.ok()) {
    auto node = broker.cluster_nodes().find(change->node.value);
    spdlog::info(
        "metadata group: {} node {}",
        change->type == raft::ConfChangeType::remove_node   ? "removing"
        : change->type == raft::ConfChangeType::add_learner ? "adding (as a learner)"
                                                            : "promoting to voter",
        node != broker.cluster_nodes().end() ? node->second.name : node_name(change->node.value));
  }
}

void Server::Impl::repair_queue_members() {
  if (++repair_ticks % (1000 / raft_tick_ms) != 0) return;
  const raft::Raft* leader = log->host().peek(metadata_group);
  if (leader == nullptr || leader->role() != raft::Role::leader) return;
  std::set<uint64_t> away;
  if (config.member_repair_after_s > 0) {
    for (const auto& [id, node] : broker.cluster_nodes()) {
      auto down = log->down_for_ms(id);
      if (!node.forgotten && down && *down >= config.member_repair_after_s * 1000) {
        away.insert(id);
      }
    }
  }
  for (broker::SetQueueMembers& repair : broker.queue_repairs(away)) {
    auto key = std::make_pair(repair.vhost, repair.name);
    if (!repairing.insert(key).second) continue;
    spdlog::info(
        "queue '{}' in vhost '{}' has a member on a forgotten node or one away for long: it "
        "gets another",
        repair.name, repair.vhost);
    broker.change_definitions(std::move(repair),
                              [this, key](const broker::Broker::DefinitionResult& result) {
                                repairing.erase(key);
                                if (!result.ok()) {
                                  spdlog::warn("queue '{}' in vhost '{}' was not repaired: {}",
                                               key.second, key.first, result.error().text);
                                }
                              });
  }
}

void Server::Impl::on_join(const cluster::Hello& joiner, const cluster::Join& join,
                           const std::string& reached_at,
                           PeerTransportCallbacks::JoinAnswerFn answer) {
  spdlog::info("node {} at {}:{} asks to join the cluster", joiner.node_name, join.host, join.port);
  auto refuse = [&answer](std::string why) {
    cluster::JoinAnswer refused;
    refused.refused = std::move(why);
    answer(refused);
  };
  if (!serving) return refuse("node " + identity.node_name + " is starting: ask again soon");
  asio::error_code ec;
  asio::ip::make_address(join.host, ec);
  if (!valid_node_name(joiner.node_name) || ec || join.port == 0) {
    return refuse(
        "a node name of 1 to 255 characters without spaces or commas, and an IP "
        "address and port, are needed to join");
  }
  if (broker.cluster_nodes().empty()) {
    // Founded before the metadata group recorded its nodes: a new node's id could be taken.
    cluster::JoinAnswer refused;
    refused.refused =
        "this cluster's metadata does not record its nodes (founded by an older hamq): it cannot "
        "take new nodes";
    return answer(refused);
  }
  // This node's own record, if it cannot be reached by it (a node that listens on every address,
  // or on a port chosen at start, as a node alone may), is corrected first.
  auto self = broker.cluster_nodes().find(identity.node_id);
  if (self != broker.cluster_nodes().end()) {
    broker::ClusterNode corrected = self->second;
    asio::error_code unspecified_error;
    auto recorded = asio::ip::make_address(corrected.host, unspecified_error);
    if (unspecified_error || recorded.is_unspecified()) corrected.host = reached_at;
    corrected.port = transport->port();
    if (corrected != self->second) broker.change_definitions(broker::AddNode{corrected});
  }
  broker.change_definitions(
      broker::AddNode{
          broker::ClusterNode{.name = joiner.node_name, .host = join.host, .port = join.port}},
      [this, answer = std::move(answer)](const broker::Broker::DefinitionResult& result) {
        cluster::JoinAnswer reply;
        if (!result.ok()) {
          reply.refused = result.error().text;
          return answer(reply);
        }
        reply.cluster_id = identity.cluster_id;
        reply.node_id = *result;
        for (const auto& [id, node] : broker.cluster_nodes()) {
          if (!node.forgotten) reply.members.push_back({node.name, node.host, node.port, id});
        }
        answer(reply);
      });
}

void Server::Impl::join_cluster(const std::string& target, ManagementListener::Respond respond) {
  auto parsed = parse_cluster_seeds(target);
  if (!parsed.ok() || parsed->size() != 1) {
    return respond(
        error_response(400, "name one node of the cluster as NAME@HOST:PORT (its cluster port)" +
                                (parsed.ok() ? std::string() : ": " + parsed.error())));
  }
  if (clustered || node_names.size() > 1) {
    return respond(error_response(409, "node " + identity.node_name +
                                           " is a member of a cluster "
                                           "already; only a blank node joins"));
  }
  if (join_transport != nullptr) return respond(error_response(409, "a join is under way"));
  // Joining starts the node anew as the cluster's member: what it holds would be lost.
  broker::Definitions held = broker.current_definitions();
  size_t queues = std::count_if(held.queues().begin(), held.queues().end(), [](const auto& q) {
    return q.first.second != broker::parking_queue_name;
  });
  if (queues != 0 || !held.exchanges().empty() || !held.bindings().empty()) {
    return respond(error_response(
        409, "node " + identity.node_name + " holds definitions (" + std::to_string(queues) +
                 " queue(s), " + std::to_string(held.exchanges().size()) +
                 " exchange(s)); only a blank node joins, since joining starts it anew"));
  }
  std::filesystem::path secret_path = config.cluster_secret_file.empty()
                                          ? config.data_dir / "cluster-secret"
                                          : config.cluster_secret_file;
  std::error_code ec;
  if (!std::filesystem::exists(secret_path, ec)) {
    return respond(error_response(409, "no cluster secret at " + secret_path.string() +
                                           ": copy the cluster's secret there first"));
  }
  auto secret = load_or_create_cluster_secret(secret_path);
  if (!secret.ok()) return respond(error_response(500, secret.error()));
  PeerAddress member = parsed->front();
  std::string secret_path_text = secret_path.string();
  join_transport =
      std::make_unique<PeerTransport>(io,
                                      PeerTransportConfig{.cluster_id = "",
                                                          .node_name = identity.node_name,
                                                          .incarnation = identity.incarnation,
                                                          .bind_address = config.bind_address,
                                                          .secret = *secret},
                                      PeerTransportCallbacks{});
  spdlog::info("asking {} to join its cluster", target);
  join_transport->request_join(
      member, cluster::Join{config.bind_address, config.cluster_port},
      [this, secret_path_text,
       respond = std::move(respond)](Result<cluster::JoinAnswer, std::string> answer) {
        // The transport goes once this returns (it called this).
        asio::post(io, [this] { join_transport.reset(); });
        if (!answer.ok()) {
          return respond(error_response(502, answer.error() + " (is " + secret_path_text +
                                                 " a copy of the cluster's secret?)"));
        }
        if (!answer->refused.empty()) return respond(error_response(409, answer->refused));
        auto recorded = record_join(config.data_dir, identity, *answer);
        if (!recorded.ok()) return respond(error_response(500, recorded.error()));
        spdlog::info("joined cluster {} as node {}: starting again as its member",
                     answer->cluster_id, answer->node_id);
        rejoin = true;
        HttpResponse joined = json_response({{"cluster_id", answer->cluster_id},
                                             {"node", identity.node_name},
                                             {"node_id", answer->node_id}});
        // Once the answer is out, the node stops and starts again (Server::run returns true).
        joined.after_sent = [this] { shut_down(0); };
        respond(joined);
      });
}

void Server::Impl::forget_cluster_node(const std::string& name,
                                       ManagementListener::Respond respond) {
  if (transport == nullptr || node_names.size() <= 1) {
    return respond(error_response(409, "this node is not in a cluster"));
  }
  if (!serving) return respond(error_response(503, "this node is starting: ask again soon"));
  if (name == identity.node_name) {
    return respond(error_response(409, "a node cannot forget itself; ask another node"));
  }
  const auto& nodes = broker.cluster_nodes();
  bool known = std::any_of(nodes.begin(), nodes.end(), [&](const auto& entry) {
    return entry.second.name == name && !entry.second.forgotten;
  });
  if (!known) return respond(error_response(404, "no node '" + name + "' in the cluster"));
  if (transport != nullptr && transport->connected(name)) {
    // As rabbitmqctl: the node to forget must be stopped first.
    return respond(error_response(409, "node " + name + " is running: stop it first"));
  }
  uint64_t waiting = next_waiting_answer++;
  waiting_answers[waiting] = std::move(respond);
  broker.change_definitions(broker::ForgetNode{name},
                            [this, name, waiting](const broker::Broker::DefinitionResult& result) {
                              auto found = waiting_answers.find(waiting);
                              if (found == waiting_answers.end()) return;
                              ManagementListener::Respond answer = std::move(found->second);
                              waiting_answers.erase(found);
                              if (!result.ok())
                                return answer(error_response(409, result.error().text));
                              spdlog::info("node {} is forgotten", name);
                              answer(json_response({{"forgotten", name}}));
                            });
}

}  // namespace hamq::server
