#include "broker/definitions.h"

#include <algorithm>

#include "amqp/wire.h"

namespace hamq::broker {

namespace {

// Version 1 knew durable definitions only; 2 adds transient and exclusive ones (their home node
// and owner) and who asked for each change; 3 the members of a durable queue's group; 4 those of a
// durable delayed exchange's (docs/formats/metadata.md).
constexpr uint8_t metadata_format_version = 4;
// A queue's group has at most this many members (one per node).
constexpr uint8_t queue_members_max = 255;
constexpr uint32_t snapshot_commands_max = 1u << 24;

enum class Kind : uint8_t {
  declare_exchange = 1,
  delete_exchange = 2,
  declare_queue = 3,
  delete_queue = 4,
  bind = 5,
  unbind = 6,
  barrier = 7,
  add_node = 8,
  forget_node = 9,
  set_queue_members = 10,
  set_node_incarnation = 11,
};

// Names are short strings in AMQP; a definition field longer than that is written as a long
// string all the same (vhost names may be longer).
void put_string(amqp::WireWriter& out, std::string_view text) {
  out.u32(static_cast<uint32_t>(text.size()));
  out.bytes(text);
}

// A count, then node ids (at most queue_members_max).
void put_members(amqp::WireWriter& out, const std::vector<uint64_t>& members) {
  out.u8(static_cast<uint8_t>(std::min<size_t>(members.size(), queue_members_max)));
  for (size_t i = 0; i < members.size() && i < queue_members_max; ++i) out.u64(members[i]);
}

bool get_string(amqp::WireReader& in, std::string& out) {
  uint32_t size = in.u32();
  if (in.failed() || size > in.remaining()) return false;
  auto bytes = in.bytes(size);
  out.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return !in.failed();
}

void put_binding(amqp::WireWriter& out, const BindingDefinition& b) {
  put_string(out, b.vhost);
  put_string(out, b.source);
  put_string(out, b.binding.destination);
  out.u8(b.binding.destination_is_queue ? 1 : 0);
  put_string(out, b.binding.key);
  amqp::encode_field_table(out, b.binding.arguments);
}

bool get_binding(amqp::WireReader& in, BindingDefinition& b) {
  if (!get_string(in, b.vhost) || !get_string(in, b.source) ||
      !get_string(in, b.binding.destination)) {
    return false;
  }
  uint8_t is_queue = in.u8();
  if (is_queue > 1 || !get_string(in, b.binding.key)) return false;
  b.binding.destination_is_queue = is_queue == 1;
  amqp::decode_field_table(in, b.binding.arguments);
  return !in.failed();
}

}  // namespace

std::string encode_metadata_command(const MetadataCommand& command) {
  std::vector<uint8_t> bytes;
  amqp::WireWriter out(bytes);
  out.u8(metadata_format_version);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, DeclareExchange>) {
          const ExchangeDefinition& e = body.exchange;
          out.u8(static_cast<uint8_t>(Kind::declare_exchange));
          put_string(out, e.vhost);
          put_string(out, e.name);
          put_string(out, e.type);
          // Flag 4: a group follows (entries written before delayed exchanges had one lack it).
          out.u8(static_cast<uint8_t>((e.auto_delete ? 1 : 0) | (e.internal ? 2 : 0) |
                                      (e.group != 0 ? 4 : 0)));
          if (e.group != 0) out.u64(e.group);
          amqp::encode_field_table(out, e.arguments);
          out.u8(e.durable ? 1 : 0);
          out.u64(e.home);
          put_members(out, e.members);
        } else if constexpr (std::is_same_v<T, DeleteExchange>) {
          out.u8(static_cast<uint8_t>(Kind::delete_exchange));
          put_string(out, body.vhost);
          put_string(out, body.name);
          out.u8(body.if_unused ? 1 : 0);
        } else if constexpr (std::is_same_v<T, DeclareQueue>) {
          const QueueDefinition& q = body.queue;
          out.u8(static_cast<uint8_t>(Kind::declare_queue));
          put_string(out, q.vhost);
          put_string(out, q.name);
          out.u64(q.group);
          out.u8(q.auto_delete ? 1 : 0);
          amqp::encode_field_table(out, q.arguments);
          out.u8(q.durable ? 1 : 0);
          out.u64(q.exclusive_owner);
          out.u64(q.home);
          out.u64(body.requester);
          put_members(out, q.members);
        } else if constexpr (std::is_same_v<T, DeleteQueue>) {
          out.u8(static_cast<uint8_t>(Kind::delete_queue));
          put_string(out, body.vhost);
          put_string(out, body.name);
        } else if constexpr (std::is_same_v<T, Bind>) {
          out.u8(static_cast<uint8_t>(Kind::bind));
          put_binding(out, body.binding);
          out.u64(body.requester);
        } else if constexpr (std::is_same_v<T, Unbind>) {
          out.u8(static_cast<uint8_t>(Kind::unbind));
          put_binding(out, body.binding);
          out.u64(body.requester);
        } else if constexpr (std::is_same_v<T, Barrier>) {
          out.u8(static_cast<uint8_t>(Kind::barrier));
        } else if constexpr (std::is_same_v<T, AddNode>) {
          out.u8(static_cast<uint8_t>(Kind::add_node));
          out.u64(body.node.id);
          put_string(out, body.node.name);
          put_string(out, body.node.host);
          out.u16(body.node.port);
          out.u8(body.node.forgotten ? 1 : 0);
        } else if constexpr (std::is_same_v<T, ForgetNode>) {
          out.u8(static_cast<uint8_t>(Kind::forget_node));
          put_string(out, body.name);
        } else if constexpr (std::is_same_v<T, SetNodeIncarnation>) {
          out.u8(static_cast<uint8_t>(Kind::set_node_incarnation));
          out.u64(body.node);
          out.u64(body.incarnation);
        } else if constexpr (std::is_same_v<T, SetQueueMembers>) {
          out.u8(static_cast<uint8_t>(Kind::set_queue_members));
          put_string(out, body.vhost);
          put_string(out, body.name);
          put_members(out, body.members);
          put_members(out, body.expected);
        }
      },
      command);
  return std::string(bytes.begin(), bytes.end());
}

Result<MetadataCommand, std::string> decode_metadata_command(std::string_view bytes) {
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  uint8_t version = in.u8();
  if (!in.failed() && (version == 0 || version > metadata_format_version)) {
    return unexpected("unknown metadata format version " + std::to_string(version));
  }
  bool v2 = version >= 2;
  // A boolean written as one byte: 0 or 1, nothing else.
  auto get_bool = [&in](bool& out) {
    uint8_t byte = in.u8();
    out = byte == 1;
    return !in.failed() && byte <= 1;
  };
  // A count, then node ids: each above 0, and once.
  auto get_members = [&in](std::vector<uint64_t>& members) {
    uint8_t count = in.u8();
    bool valid = true;
    for (uint8_t i = 0; i < count && !in.failed(); ++i) {
      uint64_t member = in.u64();
      valid = valid && member != 0 &&
              std::find(members.begin(), members.end(), member) == members.end();
      members.push_back(member);
    }
    return valid && !in.failed();
  };
  auto kind = static_cast<Kind>(in.u8());
  if (in.failed()) return unexpected(std::string("truncated"));
  MetadataCommand command;
  bool ok = true;
  switch (kind) {
    case Kind::declare_exchange: {
      ExchangeDefinition e;
      ok = get_string(in, e.vhost) && get_string(in, e.name) && get_string(in, e.type);
      uint8_t flags = in.u8();
      ok = ok && (flags & ~7) == 0;
      e.auto_delete = flags & 1;
      e.internal = flags & 2;
      if (flags & 4) {
        e.group = in.u64();
        ok = ok && e.group != 0;
      }
      if (ok) amqp::decode_field_table(in, e.arguments);
      if (ok && v2) {
        ok = get_bool(e.durable);
        e.home = in.u64();
      }
      if (ok && version >= 4) ok = get_members(e.members);
      if (ok && version < 4 && e.type == "x-delayed-message" && e.durable && e.home != 0) {
        e.members = {e.home};  // a delayed exchange's log was on the node that declared it
      }
      command = DeclareExchange{std::move(e)};
      break;
    }
    case Kind::delete_exchange:
    case Kind::delete_queue: {
      std::string vhost;
      std::string name;
      ok = get_string(in, vhost) && get_string(in, name);
      bool if_unused = false;
      if (ok && v2 && kind == Kind::delete_exchange) ok = get_bool(if_unused);
      if (kind == Kind::delete_exchange) {
        command = DeleteExchange{std::move(vhost), std::move(name), if_unused};
      } else {
        command = DeleteQueue{std::move(vhost), std::move(name)};
      }
      break;
    }
    case Kind::declare_queue: {
      QueueDefinition q;
      ok = get_string(in, q.vhost) && get_string(in, q.name);
      q.group = in.u64();
      uint8_t auto_delete = in.u8();
      ok = ok && auto_delete <= 1;
      q.auto_delete = auto_delete == 1;
      if (ok) amqp::decode_field_table(in, q.arguments);
      uint64_t requester = 0;
      if (ok && v2) {
        ok = get_bool(q.durable);
        q.exclusive_owner = in.u64();
        q.home = in.u64();
        requester = in.u64();
      }
      if (ok && version < 3 && q.durable && q.exclusive_owner == 0 && q.home != 0) {
        q.members = {q.home};  // a durable queue's log was on the node that declared it
      }
      if (ok && version >= 3) ok = get_members(q.members);
      command = DeclareQueue{std::move(q), requester};
      break;
    }
    case Kind::set_queue_members: {
      SetQueueMembers change;
      ok = version >= 3 && get_string(in, change.vhost) && get_string(in, change.name) &&
           get_members(change.members) && !change.members.empty() && get_members(change.expected);
      command = std::move(change);
      break;
    }
    case Kind::bind:
    case Kind::unbind: {
      BindingDefinition b;
      ok = get_binding(in, b);
      uint64_t requester = v2 ? in.u64() : 0;
      if (kind == Kind::bind) {
        command = Bind{std::move(b), requester};
      } else {
        command = Unbind{std::move(b), requester};
      }
      break;
    }
    case Kind::barrier:
      ok = v2;
      command = Barrier{};
      break;
    case Kind::add_node: {
      ClusterNode node;
      node.id = in.u64();
      ok = v2 && get_string(in, node.name) && get_string(in, node.host);
      node.port = in.u16();
      ok = ok && get_bool(node.forgotten) && !node.name.empty();
      command = AddNode{std::move(node)};
      break;
    }
    case Kind::forget_node: {
      std::string name;
      ok = v2 && get_string(in, name);
      command = ForgetNode{std::move(name)};
      break;
    }
    case Kind::set_node_incarnation: {
      SetNodeIncarnation set;
      set.node = in.u64();
      set.incarnation = in.u64();
      ok = v2 && set.node != 0;
      command = set;
      break;
    }
    default:
      return unexpected("unknown metadata command " + std::to_string(static_cast<int>(kind)));
  }
  if (!ok || in.failed()) return unexpected(std::string("truncated or malformed"));
  if (in.remaining() != 0) return unexpected(std::string("trailing bytes"));
  return command;
}

void Definitions::apply(const MetadataCommand& command) {
  auto drop_bindings = [&](const std::string& vhost, const std::string& name, bool is_queue) {
    std::erase_if(bindings_, [&](const BindingDefinition& b) {
      if (b.vhost != vhost) return false;
      bool to = b.binding.destination == name && b.binding.destination_is_queue == is_queue;
      bool from = !is_queue && b.source == name;
      return to || from;
    });
  };
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, DeclareExchange>) {
          exchanges_[{body.exchange.vhost, body.exchange.name}] = body.exchange;
        } else if constexpr (std::is_same_v<T, DeleteExchange>) {
          exchanges_.erase({body.vhost, body.name});
          drop_bindings(body.vhost, body.name, false);
        } else if constexpr (std::is_same_v<T, DeclareQueue>) {
          queues_[{body.queue.vhost, body.queue.name}] = body.queue;
        } else if constexpr (std::is_same_v<T, DeleteQueue>) {
          queues_.erase({body.vhost, body.name});
          drop_bindings(body.vhost, body.name, true);
        } else if constexpr (std::is_same_v<T, Bind>) {
          if (std::find(bindings_.begin(), bindings_.end(), body.binding) == bindings_.end()) {
            bindings_.push_back(body.binding);
          }
        } else if constexpr (std::is_same_v<T, Unbind>) {
          std::erase(bindings_, body.binding);
        } else if constexpr (std::is_same_v<T, AddNode>) {
          ClusterNode node = body.node;
          if (node.id == 0) node.id = next_node_id(nodes_);
          if (auto known = nodes_.find(node.id); known != nodes_.end()) {
            node.incarnation = std::max(node.incarnation, known->second.incarnation);
          }
          nodes_[node.id] = std::move(node);
        } else if constexpr (std::is_same_v<T, ForgetNode>) {
          for (auto& [id, node] : nodes_) {
            if (node.name == body.name) node.forgotten = true;
          }
        } else if constexpr (std::is_same_v<T, SetQueueMembers>) {
          auto queue = queues_.find({body.vhost, body.name});
          if (queue != queues_.end()) queue->second.members = body.members;
        } else if constexpr (std::is_same_v<T, SetNodeIncarnation>) {
          auto node = nodes_.find(body.node);
          if (node != nodes_.end()) {
            node->second.incarnation = std::max(node->second.incarnation, body.incarnation);
          }
        }
      },
      command);
}

uint64_t next_node_id(const std::map<uint64_t, ClusterNode>& nodes) {
  return nodes.empty() ? 1 : nodes.rbegin()->first + 1;
}

std::string Definitions::snapshot() const {
  std::vector<MetadataCommand> commands;
  for (const auto& [id, node] : nodes_) {
    commands.push_back(AddNode{node});
    if (node.incarnation != 0) commands.push_back(SetNodeIncarnation{id, node.incarnation});
  }
  for (const auto& [key, exchange] : exchanges_) commands.push_back(DeclareExchange{exchange});
  for (const auto& [key, queue] : queues_) {
    commands.push_back(DeclareQueue{queue, queue.exclusive_owner});
  }
  for (const BindingDefinition& binding : bindings_) {
    // Bound by whoever may: the owner of an exclusive destination.
    uint64_t requester = 0;
    if (binding.binding.destination_is_queue) {
      auto it = queues_.find({binding.vhost, binding.binding.destination});
      if (it != queues_.end()) requester = it->second.exclusive_owner;
    }
    commands.push_back(Bind{binding, requester});
  }
  return snapshot_of(commands);
}

std::string Definitions::snapshot_of(const std::vector<MetadataCommand>& commands) {
  std::vector<uint8_t> bytes;
  amqp::WireWriter out(bytes);
  out.u32(static_cast<uint32_t>(commands.size()));
  for (const MetadataCommand& command : commands) put_string(out, encode_metadata_command(command));
  return std::string(bytes.begin(), bytes.end());
}

Result<std::vector<MetadataCommand>, std::string> Definitions::snapshot_commands(
    std::string_view bytes) {
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  uint32_t count = in.u32();
  if (in.failed() || count > snapshot_commands_max) return unexpected(std::string("bad count"));
  std::vector<MetadataCommand> commands;
  for (uint32_t i = 0; i < count; ++i) {
    std::string encoded;
    if (!get_string(in, encoded)) return unexpected(std::string("truncated"));
    auto command = decode_metadata_command(encoded);
    if (!command.ok()) return unexpected(command.error());
    commands.push_back(std::move(*command));
  }
  if (in.remaining() != 0) return unexpected(std::string("trailing bytes"));
  return commands;
}

Result<Definitions, std::string> Definitions::from_snapshot(std::string_view bytes) {
  auto commands = snapshot_commands(bytes);
  if (!commands.ok()) return unexpected(commands.error());
  Definitions definitions;
  for (const MetadataCommand& command : *commands) definitions.apply(command);
  return definitions;
}

}  // namespace hamq::broker
