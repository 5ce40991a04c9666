// The management API's answers: the requests the management listener (management.h) takes,
// and what the node tells of the cluster and its queues.
#include <algorithm>

#include "server/server_impl.h"

namespace hamq::server {

void Server::Impl::handle_management(const HttpRequest& request, bool from_loopback,
                                     ManagementListener::Respond respond) {
  // As for AMQP: the default user, from loopback only, until users come (the security issue).
  auto credentials = basic_credentials(request);
  if (!credentials || credentials->first != "guest" || credentials->second != "guest" ||
      !from_loopback) {
    HttpResponse refused =
        error_response(401, "guest/guest, from a loopback address, is the only user so far");
    refused.headers["WWW-Authenticate"] = "Basic realm=\"hamq\"";
    return respond(refused);
  }
  if (handle_queue_members(request, respond)) return;
  if (request.method == "GET") return respond(handle_read(request));
  if (request.method != "POST") {
    return respond(error_response(405, "only GET, POST and DELETE are served"));
  }
  if (request.path == "/api/rebalance/queues") return respond(rebalance_queues());
  if (request.path != "/api/cluster/join" && request.path != "/api/cluster/forget") {
    return respond(error_response(404, "no such path: " + request.path));
  }
  auto body = nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object() || !body.contains("node") ||
      !body["node"].is_string()) {
    return respond(error_response(400, "the body must be a JSON object with \"node\", a string"));
  }
  std::string node = body["node"].get<std::string>();
  if (request.path == "/api/cluster/join") return join_cluster(node, std::move(respond));
  forget_cluster_node(node, std::move(respond));
}

HttpResponse Server::Impl::handle_read(const HttpRequest& request) {
  HttpResponse response;
  auto fail = [](int status, const std::string& reason) { return error_response(status, reason); };
  if (request.path == "/api/cluster-status") {
    response.body = cluster_status().dump() + "\n";
  } else if (request.path == "/api/queues") {
    response.body = queues().dump() + "\n";
  } else if (request.path == "/api/health/checks/node-is-quorum-critical") {
    // RabbitMQ's health check: 200 and {"status":"ok"}, or 503 and the queues.
    nlohmann::json critical = quorum_critical_queues();
    if (critical.empty()) return json_response({{"status", "ok"}});
    HttpResponse failed = json_response(
        {{"status", "failed"},
         {"reason",
          "there are quorum queues that would lose their quorum if the target node is "
          "shut down"},
         {"queues", critical}});
    failed.status = 503;
    return failed;
  } else {
    return fail(404, "no such path: " + request.path);
  }
  return response;
}

HttpResponse Server::Impl::rebalance_queues() {
  size_t moved = log->rebalance_now();
  // The leaders of the replicated queues as this node sees them (of the groups it holds), with
  // the moves just asked counted for their targets.
  std::map<std::string, uint64_t> leaders;
  for (const auto& [id, name] : node_names) leaders[name] = 0;
  for (const auto& [vhost_name, vhost] : broker.virtual_hosts()) {
    for (const auto& [name, queue] : vhost->queues()) {
      if (queue->group == 0 || queue->members.size() < 2) continue;
      const raft::Raft* raft = log->host().peek(raft::GroupId{queue->group});
      if (raft == nullptr || raft->leader() == raft::no_node) continue;
      raft::NodeId leader =
          raft->transfer_target() != raft::no_node ? raft->transfer_target() : raft->leader();
      ++leaders[node_name(leader.value)];
    }
  }
  return json_response({{"moved", moved}, {"leaders", leaders}});
}

nlohmann::json Server::Impl::cluster_status() {
  nlohmann::json nodes = nlohmann::json::array();
  nlohmann::json disk_nodes = nlohmann::json::array();
  nlohmann::json running_nodes = nlohmann::json::array();
  for (const auto& [id, name] : node_names) {
    bool running = node_running(id);
    std::string address;
    for (const PeerAddress& seed : config.cluster_seeds) {
      if (seed.name == name) address = seed.host + ":" + std::to_string(seed.port);
    }
    if (auto node = broker.cluster_nodes().find(id); node != broker.cluster_nodes().end()) {
      address = node->second.host + ":" + std::to_string(node->second.port);
    }
    nodes.push_back(
        {{"name", name}, {"id", id}, {"cluster_address", address}, {"running", running}});
    disk_nodes.push_back(name);
    if (running) running_nodes.push_back(name);
  }
  const raft::Raft* raft = log->host().peek(metadata_group);
  nlohmann::json leader = nullptr;
  if (raft != nullptr && raft->leader() != raft::no_node) leader = node_name(raft->leader().value);
  // The metadata group's members as this node last applied them.
  nlohmann::json voters = nlohmann::json::array();
  nlohmann::json learners = nlohmann::json::array();
  if (raft != nullptr) {
    for (raft::NodeId id : raft->conf().voters) voters.push_back(node_name(id.value));
    for (raft::NodeId id : raft->conf().learners) learners.push_back(node_name(id.value));
  }
  return {{"cluster_name", identity.cluster_id},
          {"cluster_id", identity.cluster_id},
          {"node", identity.node_name},
          {"disk_nodes", disk_nodes},
          {"running_nodes", running_nodes},
          {"metadata_leader", leader},
          {"metadata_voters", voters},
          {"metadata_learners", learners},
          {"nodes", nodes},
          {"alarms", nlohmann::json::array()}};
}

nlohmann::json Server::Impl::queues() {
  nlohmann::json out = nlohmann::json::array();
  broker::VirtualHost* vhost = broker.find_virtual_host("/");
  if (vhost == nullptr) return out;
  std::vector<std::string> names;
  for (const auto& [name, queue] : vhost->queues()) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    broker::QueuePtr queue = vhost->find_queue(name);
    std::string type = "classic";
    if (const amqp::FieldValue* declared = queue->arguments.find("x-queue-type")) {
      if (const auto* text = std::get_if<std::string>(&declared->value)) type = *text;
    }
    // Where it lives: a durable queue's group members, one of which leads; any other queue on
    // its home node.
    std::vector<uint64_t> members = queue->members;
    if (members.empty()) members = {queue->home != 0 ? queue->home : identity.node_id};
    std::sort(members.begin(), members.end());
    nlohmann::json leader = nullptr;
    if (members.size() == 1) leader = node_name(members.front());
    const raft::Raft* raft =
        queue->group != 0 ? log->host().peek(raft::GroupId{queue->group}) : nullptr;
    if (raft != nullptr && raft->leader() != raft::no_node)
      leader = node_name(raft->leader().value);
    bool here = std::find(members.begin(), members.end(), identity.node_id) != members.end();
    nlohmann::json member_names = nlohmann::json::array();
    nlohmann::json online = nlohmann::json::array();
    for (uint64_t member : members) {
      member_names.push_back(node_name(member));
      if (node_running(member)) online.push_back(node_name(member));
    }
    nlohmann::json row = {{"name", name},
                          {"vhost", vhost->name()},
                          {"type", type},
                          {"durable", queue->durable},
                          {"auto_delete", queue->auto_delete},
                          {"exclusive", queue->exclusive_owner != 0},
                          {"leader", leader},
                          {"members", member_names},
                          {"online", online}};
    // Counts are known where the queue lives (a member's replica); another node answers null.
    if (here) {
      row["messages_ready"] = queue->machine.ready_count();
      row["messages_unacknowledged"] = queue->machine.checked_out_count();
      row["messages"] = queue->machine.ready_count() + queue->machine.checked_out_count();
      row["consumers"] = queue->machine.consumer_count();
    } else {
      row["messages_ready"] = nullptr;
      row["messages_unacknowledged"] = nullptr;
      row["messages"] = nullptr;
      row["consumers"] = nullptr;
    }
    out.push_back(std::move(row));
  }
  return out;
}

nlohmann::json Server::Impl::quorum_critical_queues() {
  nlohmann::json out = nlohmann::json::array();
  broker::VirtualHost* vhost = broker.find_virtual_host("/");
  if (vhost == nullptr) return out;
  std::vector<std::string> names;
  for (const auto& [name, queue] : vhost->queues()) names.push_back(name);
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    broker::QueuePtr queue = vhost->find_queue(name);
    const std::vector<uint64_t>& members = queue->members;
    // A queue of one member has no quorum to keep with others.
    if (members.size() < 2 ||
        std::find(members.begin(), members.end(), identity.node_id) == members.end()) {
      continue;
    }
    size_t running = std::count_if(members.begin(), members.end(), [this](uint64_t member) {
      return member == identity.node_id || node_running(member);
    });
    size_t majority = members.size() / 2 + 1;
    if (running - 1 < majority) {
      out.push_back({{"name", name},
                     {"vhost", vhost->name()},
                     {"readable_name", "queue '" + name + "' in vhost '" + vhost->name() + "'"},
                     {"node", identity.node_name}});
    }
  }
  return out;
}

}  // namespace hamq::server
