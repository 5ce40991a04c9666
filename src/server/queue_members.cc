// The members of replicated queues, as an operator changes them: rabbitmq-queues' add_member,
// delete_member, grow and shrink, through the management API's quorum-queue paths. Each asks
// the metadata group for the queue's new members (broker::SetQueueMembers); the queue's group
// follows (NodeLog::reconcile_queue_members).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>
#include <regex>

#include "server/server_impl.h"

namespace hamq::server {
namespace {

constexpr std::string_view quorum_prefix = "/api/queues/quorum/";
constexpr std::string_view on_prefix = "/api/queues/quorum/replicas/on/";

// "{vhost}/{name}" of a decoded path: the default vhost "/" comes as an empty first segment
// ("//name"); any other vhost is the first segment.
std::optional<std::pair<std::string, std::string>> split_queue(std::string_view rest) {
  if (rest.starts_with("//")) return std::make_pair(std::string("/"), std::string(rest.substr(2)));
  size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= rest.size()) {
    return std::nullopt;
  }
  return std::make_pair(std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1)));
}

bool contains(const std::vector<uint64_t>& ids, uint64_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

bool Server::Impl::handle_queue_members(const HttpRequest& request,
                                        ManagementListener::Respond& respond) {
  std::string_view path = request.path;
  if (!path.starts_with(quorum_prefix)) return false;
  if (request.method == "GET" && path.ends_with("/status") && !path.starts_with(on_prefix)) {
    auto queue =
        split_queue(path.substr(quorum_prefix.size(), path.size() - quorum_prefix.size() - 7));
    if (!queue) {
      respond(error_response(404, "no such path: " + request.path));
      return true;
    }
    respond(queue_status(queue->first, queue->second));
    return true;
  }
  auto body = request.body.empty() ? nlohmann::json::object()
                                   : nlohmann::json::parse(request.body, nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    respond(error_response(400, "the body must be a JSON object"));
    return true;
  }
  auto text = [&body](const char* key, const std::string& otherwise) {
    return body.contains(key) && body[key].is_string() ? body[key].get<std::string>() : otherwise;
  };
  if (path.starts_with(on_prefix)) {
    std::string_view rest = path.substr(on_prefix.size());
    bool grow = rest.ends_with("/grow") && request.method == "POST";
    bool shrink = rest.ends_with("/shrink") && request.method == "DELETE";
    if (!grow && !shrink) {
      respond(error_response(404, "no such path for " + request.method + ": " + request.path));
      return true;
    }
    std::string node(rest.substr(0, rest.rfind('/')));
    std::string strategy = text("strategy", "all");
    if (grow && strategy != "all" && strategy != "even") {
      respond(error_response(400, "strategy must be \"all\" or \"even\""));
      return true;
    }
    change_members_on(node, grow, strategy, text("vhost_pattern", ".*"),
                      text("queue_pattern", ".*"), std::move(respond));
    return true;
  }
  std::string_view rest = path.substr(quorum_prefix.size());
  bool add = rest.ends_with("/replicas/add") && request.method == "POST";
  bool remove = rest.ends_with("/replicas/delete") && request.method == "DELETE";
  if (!add && !remove) {
    respond(error_response(404, "no such path for " + request.method + ": " + request.path));
    return true;
  }
  rest.remove_suffix(add ? std::string_view("/replicas/add").size()
                         : std::string_view("/replicas/delete").size());
  auto queue = split_queue(rest);
  std::string node = text("node", "");
  if (!queue || node.empty()) {
    respond(error_response(400,
                           "a queue's vhost and name in the path, and {\"node\": NAME}, "
                           "are needed"));
    return true;
  }
  change_queue_member(queue->first, queue->second, node, add, std::move(respond));
  return true;
}

HttpResponse Server::Impl::queue_status(const std::string& vhost, const std::string& name) {
  broker::VirtualHost* host = broker.find_virtual_host(vhost);
  broker::QueuePtr queue = host != nullptr ? host->find_queue(name) : nullptr;
  std::string named = "queue '" + name + "' in vhost '" + vhost + "'";
  if (!queue) return error_response(404, "no " + named);
  const raft::Raft* raft =
      queue->group != 0 ? log->host().peek(raft::GroupId{queue->group}) : nullptr;
  if (raft == nullptr) {
    return error_response(400, named + " has no member on node " + identity.node_name +
                                   ": ask a node that holds one");
  }
  // Every member its group's configuration has, and those its queue is to have: the leader
  // knows how far each has its log; another member knows its own replica.
  std::vector<uint64_t> nodes;
  for (const auto& members : {raft->conf().voters, raft->conf().learners}) {
    for (raft::NodeId member : members) nodes.push_back(member.value);
  }
  for (uint64_t member : queue->members) {
    if (std::find(nodes.begin(), nodes.end(), member) == nodes.end()) nodes.push_back(member);
  }
  bool leads = raft->role() == raft::Role::leader;
  nlohmann::json rows = nlohmann::json::array();
  for (uint64_t member : nodes) {
    raft::NodeId id{member};
    std::string membership = raft::is_voter(raft->conf(), id)     ? "voter"
                             : raft::is_learner(raft->conf(), id) ? "promotable"
                                                                  : "joining";
    nlohmann::json row = {{"node", node_name(member)}, {"membership", membership},
                          {"raft_state", nullptr},     {"last_log_index", nullptr},
                          {"commit_index", nullptr},   {"snapshot_index", nullptr},
                          {"term", nullptr},           {"online", node_running(member)}};
    if (member == identity.node_id) {
      row["raft_state"] = std::string(raft::role_name(raft->role()));
      row["last_log_index"] = raft->log().last_index().value;
      row["commit_index"] = raft->committed().value;
      row["snapshot_index"] = raft->log().first_index().value - 1;
      row["term"] = raft->term().value;
    } else if (raft->leader() == id) {
      row["raft_state"] = "leader";
    } else if (leads) {
      if (const raft::Progress* progress = raft->progress(id)) {
        row["raft_state"] = "follower";
        row["last_log_index"] = progress->match.value;  // what it holds, as far as the leader knows
      }
    }
    if (leads) row["term"] = raft->term().value;
    rows.push_back(std::move(row));
  }
  return json_response(rows);
}

std::optional<uint64_t> Server::Impl::member_node_id(const std::string& name) const {
  for (const auto& [id, node] : broker.cluster_nodes()) {
    if (node.name == name && !node.forgotten) return id;
  }
  return std::nullopt;
}

void Server::Impl::propose_queue_members(const std::string& vhost, const std::string& name,
                                         std::vector<uint64_t> members,
                                         std::vector<uint64_t> expected,
                                         std::function<void(std::optional<std::string>)> done) {
  broker.change_definitions(
      broker::SetQueueMembers{vhost, name, std::move(members), std::move(expected)},
      [done = std::move(done)](const broker::Broker::DefinitionResult& result) {
        done(result.ok() ? std::nullopt : std::optional<std::string>(result.error().text));
      });
}

void Server::Impl::change_queue_member(const std::string& vhost, const std::string& name,
                                       const std::string& node, bool add,
                                       ManagementListener::Respond respond) {
  if (!serving) return respond(error_response(503, "this node is starting: ask again soon"));
  broker::VirtualHost* host = broker.find_virtual_host(vhost);
  broker::QueuePtr queue = host != nullptr ? host->find_queue(name) : nullptr;
  std::string named = "queue '" + name + "' in vhost '" + vhost + "'";
  if (!queue) return respond(error_response(404, "no " + named));
  if (queue->group == 0 || queue->members.empty()) {
    return respond(error_response(400, named + " is not a replicated queue"));
  }
  auto id = member_node_id(node);
  if (!id) return respond(error_response(404, "no node '" + node + "' in the cluster"));
  std::vector<uint64_t> members = queue->members;
  if (add) {
    if (contains(members, *id)) {
      return respond(error_response(409, "node " + node + " is a member of " + named + " already"));
    }
    members.push_back(*id);
  } else {
    if (!contains(members, *id)) {
      return respond(error_response(409, "node " + node + " is not a member of " + named));
    }
    if (members.size() == 1) {
      return respond(error_response(409, "node " + node + " is the last member of " + named));
    }
    std::erase(members, *id);
  }
  uint64_t waiting = next_waiting_answer++;
  waiting_answers[waiting] = std::move(respond);
  propose_queue_members(
      vhost, name, std::move(members), queue->members,
      [this, waiting, named, node, add](std::optional<std::string> failure) {
        auto found = waiting_answers.find(waiting);
        if (found == waiting_answers.end()) return;
        ManagementListener::Respond answer = std::move(found->second);
        waiting_answers.erase(found);
        if (failure) return answer(error_response(409, *failure));
        spdlog::info("{}: {} node {}", named, add ? "adding a member on" : "removing the member on",
                     node);
        answer(json_response({{"queue", named}, {"node", node}, {"result", "ok"}}));
      });
}

void Server::Impl::change_members_on(const std::string& node, bool grow,
                                     const std::string& strategy, const std::string& vhost_pattern,
                                     const std::string& queue_pattern,
                                     ManagementListener::Respond respond) {
  if (!serving) return respond(error_response(503, "this node is starting: ask again soon"));
  auto id = member_node_id(node);
  if (!id) return respond(error_response(404, "no node '" + node + "' in the cluster"));
  std::regex vhost_regex;
  std::regex queue_regex;
  try {
    vhost_regex = std::regex(vhost_pattern);
    queue_regex = std::regex(queue_pattern);
  } catch (const std::regex_error&) {
    return respond(error_response(400, "vhost_pattern and queue_pattern must be regexes"));
  }
  struct Change {
    std::string vhost;
    std::string name;
    std::vector<uint64_t> members;
    std::vector<uint64_t> expected;
  };
  std::vector<Change> changes;
  for (const auto& [vhost_name, vhost] : broker.virtual_hosts()) {
    if (!std::regex_search(vhost_name, vhost_regex)) continue;
    for (const auto& [name, queue] : vhost->queues()) {
      if (queue->group == 0 || queue->members.empty() || !std::regex_search(name, queue_regex)) {
        continue;
      }
      std::vector<uint64_t> members = queue->members;
      if (grow) {
        if (contains(members, *id) || (strategy == "even" && members.size() % 2 != 0)) continue;
        members.push_back(*id);
      } else {
        // The last member stays (its messages are nowhere else).
        if (!contains(members, *id) || members.size() == 1) continue;
        std::erase(members, *id);
      }
      changes.push_back(Change{vhost_name, name, std::move(members), queue->members});
    }
  }
  // One answer once every change is: each queue with its new size, or why it was not changed.
  struct Progress {
    nlohmann::json rows = nlohmann::json::array();
    size_t left = 0;
  };
  auto progress = std::make_shared<Progress>();
  progress->left = changes.size();
  uint64_t waiting = next_waiting_answer++;
  waiting_answers[waiting] = std::move(respond);
  auto finish = [this, waiting, progress] {
    auto found = waiting_answers.find(waiting);
    if (found == waiting_answers.end()) return;
    ManagementListener::Respond answer = std::move(found->second);
    waiting_answers.erase(found);
    answer(json_response(progress->rows));
  };
  if (changes.empty()) return finish();
  spdlog::info("{} the replicated queues on node {}: {} queue(s)", grow ? "growing" : "shrinking",
               node, changes.size());
  for (Change& change : changes) {
    size_t size = change.members.size();
    std::string vhost_name = change.vhost;
    std::string name = change.name;
    propose_queue_members(
        change.vhost, change.name, std::move(change.members), std::move(change.expected),
        [progress, finish, vhost_name, name, size](std::optional<std::string> failure) {
          nlohmann::json row = {{"vhost", vhost_name}, {"name", name}, {"size", size}};
          row["result"] = failure ? nlohmann::json(*failure) : nlohmann::json("ok");
          progress->rows.push_back(std::move(row));
          if (--progress->left == 0) finish();
        });
  }
}

}  // namespace hamq::server
