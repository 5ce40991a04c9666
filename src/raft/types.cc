#include "raft/types.h"

#include <algorithm>

#include "raft/message.h"

namespace hamq::raft {

std::string encode_conf_change(const ConfChange& change) {
  std::string bytes(9, '\0');
  bytes[0] = static_cast<char>(change.type);
  for (int i = 0; i < 8; ++i) bytes[1 + i] = static_cast<char>(change.node.value >> (8 * i));
  return bytes;
}

bool decode_conf_change(const std::string& bytes, ConfChange& change) {
  if (bytes.size() != 9 || static_cast<uint8_t>(bytes[0]) > 2) return false;
  change.type = static_cast<ConfChangeType>(bytes[0]);
  change.node.value = 0;
  for (int i = 0; i < 8; ++i) {
    change.node.value |= uint64_t{static_cast<uint8_t>(bytes[1 + i])} << (8 * i);
  }
  return change.node != no_node;
}

namespace {
bool contains(const std::vector<NodeId>& nodes, NodeId node) {
  return std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}
void erase(std::vector<NodeId>& nodes, NodeId node) {
  nodes.erase(std::remove(nodes.begin(), nodes.end(), node), nodes.end());
}
}  // namespace

bool is_voter(const ConfState& conf, NodeId node) {
  return contains(conf.voters, node);
}
bool is_learner(const ConfState& conf, NodeId node) {
  return contains(conf.learners, node);
}

bool apply_conf_change(const ConfChange& change, ConfState& conf) {
  switch (change.type) {
    case ConfChangeType::add_voter:
      if (is_voter(conf, change.node)) return false;
      erase(conf.learners, change.node);
      conf.voters.push_back(change.node);
      return true;
    case ConfChangeType::add_learner:
      if (is_learner(conf, change.node)) return false;
      erase(conf.voters, change.node);
      conf.learners.push_back(change.node);
      return true;
    case ConfChangeType::remove_node:
      if (!is_voter(conf, change.node) && !is_learner(conf, change.node)) return false;
      erase(conf.voters, change.node);
      erase(conf.learners, change.node);
      return true;
  }
  return false;
}

std::string_view message_type_name(MessageType type) {
  switch (type) {
    case MessageType::pre_vote:
      return "pre_vote";
    case MessageType::pre_vote_response:
      return "pre_vote_response";
    case MessageType::vote:
      return "vote";
    case MessageType::vote_response:
      return "vote_response";
    case MessageType::append:
      return "append";
    case MessageType::append_response:
      return "append_response";
    case MessageType::heartbeat:
      return "heartbeat";
    case MessageType::heartbeat_response:
      return "heartbeat_response";
    case MessageType::snapshot:
      return "snapshot";
    case MessageType::snapshot_response:
      return "snapshot_response";
    case MessageType::timeout_now:
      return "timeout_now";
  }
  return "unknown";
}

}  // namespace hamq::raft
