// hamqctl: hamq's command-line tool, rabbitmqctl's counterpart. It talks to one node over its
// management listener (-n HOST:PORT, the node's --bind address and --management-port).
//
//   hamqctl [-n HOST:PORT] [--formatter json] cluster_status
//   hamqctl [-n HOST:PORT] [--formatter json] list_queues [COLUMN...]
//   hamqctl -n NEW_NODE:PORT join_cluster NAME@HOST:PORT
//   hamqctl [-n HOST:PORT] forget_cluster_node NAME
//   hamqctl [-n HOST:PORT] check_if_node_is_quorum_critical
//   hamqctl [-n HOST:PORT] add_member [--vhost VHOST] QUEUE NODE
//   hamqctl [-n HOST:PORT] delete_member [--vhost VHOST] QUEUE NODE
//   hamqctl [-n HOST:PORT] grow NODE all|even [--vhost-pattern RE] [--queue-pattern RE]
//   hamqctl [-n HOST:PORT] shrink NODE
//   hamqctl [-n HOST:PORT] [--formatter json] quorum_status [--vhost VHOST] QUEUE
//   hamqctl [-n HOST:PORT] [--formatter json] rebalance all|quorum
//
// join_cluster is sent to the blank node that joins (as rabbitmqctl's): NAME@HOST:PORT is any
// member of the cluster, at its cluster port; the cluster's secret file must be on the new node
// first. forget_cluster_node removes a stopped node for good, through any other node.
// check_if_node_is_quorum_critical fails (69) if stopping the node would leave a replicated queue
// without a majority of its members running, and names those queues. add_member, delete_member,
// grow and shrink change which nodes hold replicated queues, as rabbitmq-queues' do: the queue's
// group takes a new member as a learner, promotes it once it caught up, and removes one that
// leaves (one change at a time); they return once the change is recorded, not once it is done
// (list_queues members shows the members recorded). quorum_status shows each member as the
// node asked sees it (it must hold a member; its leader knows every member's log). rebalance
// asks the node to hand over its share of leaderships at once (every node does so each second by
// itself) and prints the leaders per node as it sees them.
//
// --formatter json prints what rabbitmqctl --formatter json does: for list_queues a JSON array of
// objects keyed by the columns asked for, for cluster_status one object. Exit codes as
// rabbitmqctl's: 64 usage, 69 the node cannot be reached, 70 the node refused the request.
#include <CLI/CLI.hpp>
#include <asio.hpp>
#include <cctype>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {

constexpr int exit_usage = 64;
constexpr int exit_unavailable = 69;
constexpr int exit_software = 70;

const std::vector<std::string> queue_columns = {
    "name",     "vhost",   "type",   "durable",  "auto_delete",    "exclusive",
    "leader",   "members", "online", "messages", "messages_ready", "messages_unacknowledged",
    "consumers"};

std::string base64(const std::string& text) {
  static constexpr char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < text.size(); i += 3) {
    uint32_t n = static_cast<uint8_t>(text[i]) << 16;
    if (i + 1 < text.size()) n |= static_cast<uint8_t>(text[i + 1]) << 8;
    if (i + 2 < text.size()) n |= static_cast<uint8_t>(text[i + 2]);
    out.push_back(alphabet[n >> 18 & 63]);
    out.push_back(alphabet[n >> 12 & 63]);
    out.push_back(i + 1 < text.size() ? alphabet[n >> 6 & 63] : '=');
    out.push_back(i + 2 < text.size() ? alphabet[n & 63] : '=');
  }
  return out;
}

struct Reply {
  int status = 0;
  std::string body;
};

// `method` `path` (with a JSON `body` for a POST) to the node; exits with 69 if it cannot be
// reached.
Reply request(const std::string& method, const std::string& node, const std::string& path,
              const std::string& user, const std::string& password, const std::string& body = "") {
  size_t colon = node.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    std::cerr << "Error: -n expects HOST:PORT, got '" << node << "'\n";
    std::exit(exit_usage);
  }
  std::string host = node.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string port = node.substr(colon + 1);
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    asio::ip::tcp::socket socket(io);
    asio::connect(socket, resolver.resolve(host, port));
    std::string head = method + " " + path + " HTTP/1.1\r\nHost: " + node +
                       "\r\nAuthorization: Basic " + base64(user + ":" + password) +
                       "\r\nAccept: application/json\r\nConnection: close\r\n";
    if (method == "POST" || !body.empty()) {
      head += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n";
    }
    head += "\r\n" + body;
    asio::write(socket, asio::buffer(head));
    std::string response;
    asio::error_code ec;
    char buffer[8192];
    for (;;) {
      size_t n = socket.read_some(asio::buffer(buffer), ec);
      response.append(buffer, n);
      if (ec) break;
    }
    if (ec != asio::error::eof) throw asio::system_error(ec);
    size_t head_end = response.find("\r\n\r\n");
    if (response.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos ||
        response.size() < 12) {
      std::cerr << "Error: node " << node << " answered something that is not HTTP\n";
      std::exit(exit_unavailable);
    }
    return Reply{std::stoi(response.substr(9, 3)), response.substr(head_end + 4)};
  } catch (const std::exception& error) {
    std::cerr << "Error: unable to reach node " << node << ": " << error.what() << "\n"
              << "Is hamq-server running there with --management-port " << port << "?\n";
    std::exit(exit_unavailable);
  }
}

nlohmann::json ask_json(const std::string& method, const std::string& node, const std::string& path,
                        const std::string& user, const std::string& password,
                        const std::string& sent = "") {
  Reply reply = request(method, node, path, user, password, sent);
  nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
  if (reply.status != 200) {
    std::string reason =
        body.is_object() && body.contains("reason") ? body["reason"].dump() : reply.body;
    std::cerr << "Error: node " << node << " answered " << reply.status << ": " << reason << "\n";
    std::exit(exit_software);
  }
  if (body.is_discarded()) {
    std::cerr << "Error: node " << node << " answered JSON that does not parse\n";
    std::exit(exit_software);
  }
  return body;
}

// A path segment as a URL carries it ("/" is %2F).
std::string percent_encode(const std::string& text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// A value as rabbitmqctl's table shows it: lists as [a, b], null as nothing.
std::string cell(const nlohmann::json& value) {
  if (value.is_null()) return "";
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < value.size(); ++i) out += (i ? ", " : "") + cell(value[i]);
    return out + "]";
  }
  return value.dump();
}

}  // namespace

int main(int argc, char** argv) {
  std::string node = "localhost:15672";
  std::string formatter = "table";
  std::string user = "guest";
  std::string password = "guest";
  std::vector<std::string> columns;

  CLI::App app{"hamqctl: manage a hamq cluster through one of its nodes", "hamqctl"};
  app.fallthrough();
  app.require_subcommand(1);
  app.add_option("-n,--node", node, "The node's management listener, HOST:PORT")
      ->capture_default_str();
  app.add_option("--formatter", formatter, "table or json")
      ->capture_default_str()
      ->check(CLI::IsMember({"table", "json"}));
  app.add_option("--username", user, "Management user")->capture_default_str();
  app.add_option("--password", password, "Management password")->capture_default_str();
  CLI::App* cluster_status = app.add_subcommand("cluster_status", "The cluster's nodes");
  CLI::App* list_queues = app.add_subcommand("list_queues", "Queues, with the columns asked for");
  list_queues->add_option("columns", columns,
                          "Columns (default: name messages): name vhost type durable auto_delete "
                          "exclusive leader members online messages messages_ready "
                          "messages_unacknowledged consumers");
  std::string member;
  CLI::App* join_cluster =
      app.add_subcommand("join_cluster", "Makes the node (-n, blank) a member of a cluster");
  join_cluster->add_option("node", member, "A member of the cluster: NAME@HOST:CLUSTER_PORT")
      ->required();
  std::string forgotten;
  CLI::App* forget_cluster_node =
      app.add_subcommand("forget_cluster_node", "Removes a stopped node from the cluster for good");
  forget_cluster_node->add_option("node", forgotten, "The node's name")->required();
  CLI::App* quorum_critical = app.add_subcommand(
      "check_if_node_is_quorum_critical",
      "Fails if stopping the node would leave a replicated queue without a majority");
  std::string vhost = "/";
  std::string queue_name;
  std::string member_node;
  CLI::App* quorum_status =
      app.add_subcommand("quorum_status", "The members of a replicated queue and their Raft state");
  quorum_status->add_option("--vhost", vhost, "The queue's virtual host")->capture_default_str();
  quorum_status->add_option("queue", queue_name, "The queue")->required();
  std::string queue_type;
  CLI::App* rebalance =
      app.add_subcommand("rebalance", "Spreads the replicated queues' leaders over the nodes now");
  rebalance->add_option("type", queue_type, "all or quorum (every replicated queue)")
      ->required()
      ->check(CLI::IsMember({"all", "quorum"}));
  CLI::App* add_member = app.add_subcommand("add_member", "Adds a member of a replicated queue");
  CLI::App* delete_member =
      app.add_subcommand("delete_member", "Removes a member of a replicated queue");
  for (CLI::App* command : {add_member, delete_member}) {
    command->add_option("--vhost", vhost, "The queue's virtual host")->capture_default_str();
    command->add_option("queue", queue_name, "The queue")->required();
    command->add_option("node", member_node, "The node's name")->required();
  }
  std::string strategy;
  std::string vhost_pattern = ".*";
  std::string queue_pattern = ".*";
  CLI::App* grow =
      app.add_subcommand("grow",
                         "Adds a member on the node to every replicated queue (or those "
                         "with an even number of members)");
  grow->add_option("node", member_node, "The node's name")->required();
  grow->add_option("strategy", strategy, "all or even")
      ->required()
      ->check(CLI::IsMember({"all", "even"}));
  grow->add_option("--vhost-pattern", vhost_pattern, "Virtual hosts (a regex)")
      ->capture_default_str();
  grow->add_option("--queue-pattern", queue_pattern, "Queues (a regex)")->capture_default_str();
  CLI::App* shrink =
      app.add_subcommand("shrink", "Removes the node's member of every replicated queue");
  shrink->add_option("node", member_node, "The node's name")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    int code = app.exit(error);
    return code == 0 ? 0 : exit_usage;
  }

  if (cluster_status->parsed()) {
    nlohmann::json status = ask_json("GET", node, "/api/cluster-status", user, password);
    if (formatter == "json") {
      std::cout << status.dump() << "\n";
      return 0;
    }
    std::cout << "Cluster status of node " << cell(status["node"]) << " ...\nBasics\n\n"
              << "Cluster name: " << cell(status["cluster_name"]) << "\n\nDisk Nodes\n\n";
    for (const auto& name : status["disk_nodes"]) std::cout << cell(name) << "\n";
    std::cout << "\nRunning Nodes\n\n";
    for (const auto& name : status["running_nodes"]) std::cout << cell(name) << "\n";
    std::cout << "\nMetadata leader: " << cell(status["metadata_leader"]) << "\n";
    return 0;
  }

  if (join_cluster->parsed()) {
    nlohmann::json joined = ask_json("POST", node, "/api/cluster/join", user, password,
                                     nlohmann::json{{"node", member}}.dump());
    std::cout << "Clustering node " << cell(joined["node"]) << " with " << member << "\n";
    return 0;
  }
  if (forget_cluster_node->parsed()) {
    ask_json("POST", node, "/api/cluster/forget", user, password,
             nlohmann::json{{"node", forgotten}}.dump());
    std::cout << "Removing node " << forgotten << " from the cluster\n";
    return 0;
  }

  if (rebalance->parsed()) {
    nlohmann::json done = ask_json("POST", node, "/api/rebalance/queues", user, password, "{}");
    if (formatter == "json") {
      std::cout << done.dump() << "\n";
      return 0;
    }
    std::cout << "Re-balancing leaders of replicated queues ...\n"
              << "Leaderships handed over by " << node << ": " << cell(done["moved"]) << "\n"
              << "Node Name\tNumber of quorum queue leaders\n";
    for (const auto& [name, count] : done["leaders"].items()) {
      std::cout << name << "\t" << cell(count) << "\n";
    }
    return 0;
  }
  if (quorum_status->parsed()) {
    nlohmann::json rows = ask_json("GET", node,
                                   "/api/queues/quorum/" + percent_encode(vhost) + "/" +
                                       percent_encode(queue_name) + "/status",
                                   user, password);
    if (formatter == "json") {
      std::cout << rows.dump() << "\n";
      return 0;
    }
    std::cout << "Status of replicated queue " << queue_name << " on node " << node << " ...\n"
              << "Node Name\tRaft State\tMembership\tLast Log Index\tCommit Index\t"
                 "Snapshot Index\tTerm\n";
    for (const auto& row : rows) {
      std::cout << cell(row["node"]) << "\t" << cell(row["raft_state"]) << "\t"
                << cell(row["membership"]) << "\t" << cell(row["last_log_index"]) << "\t"
                << cell(row["commit_index"]) << "\t" << cell(row["snapshot_index"]) << "\t"
                << cell(row["term"]) << "\n";
    }
    return 0;
  }
  if (add_member->parsed() || delete_member->parsed()) {
    bool adding = add_member->parsed();
    std::string path = "/api/queues/quorum/" + percent_encode(vhost) + "/" +
                       percent_encode(queue_name) + (adding ? "/replicas/add" : "/replicas/delete");
    std::cout << (adding ? "Adding a replica for queue " : "Removing a replica for queue ")
              << queue_name << " in vhost " << vhost << (adding ? " on node " : " from node ")
              << member_node << " ...\n";
    ask_json(adding ? "POST" : "DELETE", node, path, user, password,
             nlohmann::json{{"node", member_node}}.dump());
    return 0;
  }
  if (grow->parsed() || shrink->parsed()) {
    bool growing = grow->parsed();
    std::string path = "/api/queues/quorum/replicas/on/" + percent_encode(member_node) +
                       (growing ? "/grow" : "/shrink");
    nlohmann::json sent = nlohmann::json::object();
    if (growing) {
      sent = {{"strategy", strategy},
              {"vhost_pattern", vhost_pattern},
              {"queue_pattern", queue_pattern}};
    }
    nlohmann::json rows = ask_json(growing ? "POST" : "DELETE", node, path, user, password,
                                   growing ? sent.dump() : std::string());
    if (formatter == "json") {
      std::cout << rows.dump() << "\n";
      return 0;
    }
    std::cout << (growing ? "Growing" : "Shrinking") << " replicated queues on node " << member_node
              << " ...\nvhost\tname\tsize\tresult\n";
    for (const auto& row : rows) {
      std::cout << cell(row["vhost"]) << "\t" << cell(row["name"]) << "\t" << cell(row["size"])
                << "\t" << cell(row["result"]) << "\n";
    }
    return 0;
  }

  if (quorum_critical->parsed()) {
    Reply reply =
        request("GET", node, "/api/health/checks/node-is-quorum-critical", user, password);
    nlohmann::json body = nlohmann::json::parse(reply.body, nullptr, false);
    if (body.is_discarded() || !body.is_object() || (reply.status != 200 && reply.status != 503)) {
      std::cerr << "Error: node " << node << " answered " << reply.status << ": " << reply.body
                << "\n";
      return exit_software;
    }
    if (formatter == "json") std::cout << body.dump() << "\n";
    if (reply.status == 200) {
      if (formatter != "json") {
        std::cout << "Node " << node << " reported no quorum queues with minimum quorum\n";
      }
      return 0;
    }
    if (formatter != "json") {
      std::cout << "Error: " << cell(body["reason"]) << ":\n";
      for (const auto& queue : body["queues"]) std::cout << cell(queue["readable_name"]) << "\n";
    }
    return exit_unavailable;
  }

  if (columns.empty()) columns = {"name", "messages"};
  for (const std::string& column : columns) {
    if (std::find(queue_columns.begin(), queue_columns.end(), column) == queue_columns.end()) {
      std::cerr << "Error: unknown column '" << column << "' for list_queues\n";
      return exit_usage;
    }
  }
  nlohmann::json queues = ask_json("GET", node, "/api/queues", user, password);
  if (formatter == "json") {
    // Keys in the order of the columns asked for, as rabbitmqctl prints them.
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& queue : queues) {
      nlohmann::ordered_json row = nlohmann::ordered_json::object();
      for (const std::string& column : columns) {
        row[column] = nlohmann::ordered_json(queue.contains(column) ? queue[column]
                                                                    : nlohmann::json(nullptr));
      }
      out.push_back(std::move(row));
    }
    std::cout << out.dump() << "\n";
    return 0;
  }
  std::cout << "Timeout: 60.0 seconds ...\nListing queues for vhost / ...\n";
  for (size_t i = 0; i < columns.size(); ++i) std::cout << (i ? "\t" : "") << columns[i];
  std::cout << "\n";
  for (const auto& queue : queues) {
    for (size_t i = 0; i < columns.size(); ++i) {
      std::cout << (i ? "\t" : "") << (queue.contains(columns[i]) ? cell(queue[columns[i]]) : "");
    }
    std::cout << "\n";
  }
  return 0;
}
