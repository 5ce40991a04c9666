#include "queue/command.h"

#include "amqp/wire.h"
#include "common/verify.h"

namespace hamq::queue {

namespace {

// Bump on any change to the encoding; decode refuses versions it does not know. Version 2
// added the origin (proposer, number, floor) after the time, version 3 an enqueue's hand-over key
// (flag enqueue_handed_over); entries of versions 1 and 2 still decode.
constexpr uint8_t command_format_version = 3;
constexpr uint8_t command_format_without_hand_over_keys = 2;
constexpr uint8_t command_format_without_origin = 1;
bool known_version(uint8_t version) {
  return version == command_format_version || version == command_format_without_hand_over_keys ||
         version == command_format_without_origin;
}
// A message in a command is bounded like a published one (the broker refuses larger).
constexpr uint64_t message_body_bytes_max = 128ull << 20;
constexpr uint32_t ids_max = 1u << 20;

// An enqueue's flags.
constexpr uint8_t enqueue_has_ttl = 1;
constexpr uint8_t enqueue_handed_over = 2;  // its HandOverKey follows the TTL

enum class Kind : uint8_t {
  enqueue = 1,
  attach = 2,
  cancel = 3,
  detach = 4,
  settle = 5,
  get = 6,
  purge = 7,
  expire = 8,
  suspend = 9,
  handed_over = 10,
};

void write_ids(amqp::WireWriter& out, const std::vector<MessageId>& ids) {
  out.u32(static_cast<uint32_t>(ids.size()));
  for (MessageId id : ids) out.u64(id.value);
}

bool read_ids(amqp::WireReader& in, std::vector<MessageId>& ids) {
  uint32_t count = in.u32();
  if (count > ids_max || uint64_t{count} * 8 > in.remaining()) return false;
  ids.reserve(count);
  for (uint32_t i = 0; i < count; ++i) ids.push_back(MessageId{in.u64()});
  return true;
}

}  // namespace

void encode_message(amqp::WireWriter& out, const Message& message) {
  out.short_string(message.exchange);
  out.short_string(message.routing_key);
  std::vector<uint8_t> header;
  amqp::WireWriter header_writer(header);
  amqp::encode_content_header(header_writer, amqp::ContentHeader{.class_id = amqp::class_basic,
                                                                 .body_size = message.body.size(),
                                                                 .properties = message.properties});
  out.u32(static_cast<uint32_t>(header.size()));
  out.bytes(header);
  out.u64(message.body.size());
  out.bytes(message.body);
}

Result<MessagePtr, std::string> decode_message(amqp::WireReader& in) {
  auto message = std::make_shared<Message>();
  in.short_string(message->exchange);
  in.short_string(message->routing_key);
  uint32_t header_size = in.u32();
  if (in.failed() || header_size > in.remaining()) return unexpected(std::string("truncated"));
  auto decoded = amqp::decode_content_header(in.bytes(header_size));
  if (!decoded.ok()) return unexpected("bad content header: " + decoded.error().text);
  message->properties = std::move(decoded->properties);
  uint64_t body_size = in.u64();
  if (in.failed() || body_size > in.remaining() || body_size > message_body_bytes_max ||
      body_size != decoded->body_size) {
    return unexpected(std::string("bad body size"));
  }
  auto body = in.bytes(body_size);
  message->body.assign(reinterpret_cast<const char*>(body.data()), body.size());
  return MessagePtr(std::move(message));
}

std::string encode_command(const QueueCommand& command) {
  std::vector<uint8_t> bytes;
  amqp::WireWriter out(bytes);
  out.u8(command_format_version);
  out.u64(command.time_ms);
  out.u64(command.origin.proposer);
  out.u64(command.origin.seq);
  out.u64(command.origin.floor);
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, EnqueueCommand>) {
          out.u8(static_cast<uint8_t>(Kind::enqueue));
          out.u8(static_cast<uint8_t>((body.ttl_ms ? enqueue_has_ttl : 0) |
                                      (body.from ? enqueue_handed_over : 0)));
          out.u64(body.ttl_ms.value_or(0));
          if (body.from) {
            out.u64(body.from->source);
            out.u64(body.from->id);
          }
          encode_message(out, *body.message);
        } else if constexpr (std::is_same_v<T, AttachCommand>) {
          out.u8(static_cast<uint8_t>(Kind::attach));
          out.u64(body.consumer.value);
          out.u32(body.prefetch_count);
          out.u64(static_cast<uint64_t>(body.priority));
          out.u8(static_cast<uint8_t>((body.no_ack ? 1 : 0) | (body.exclusive ? 2 : 0)));
        } else if constexpr (std::is_same_v<T, CancelCommand>) {
          out.u8(static_cast<uint8_t>(Kind::cancel));
          out.u64(body.consumer.value);
        } else if constexpr (std::is_same_v<T, DetachCommand>) {
          out.u8(static_cast<uint8_t>(Kind::detach));
          out.u64(body.holder.value);
        } else if constexpr (std::is_same_v<T, SettleCommand>) {
          out.u8(static_cast<uint8_t>(Kind::settle));
          out.u8(static_cast<uint8_t>(body.kind));
          out.u64(body.holder.value);
          write_ids(out, body.ids);
        } else if constexpr (std::is_same_v<T, GetCommand>) {
          out.u8(static_cast<uint8_t>(Kind::get));
          out.u64(body.holder.value);
          out.u8(body.no_ack ? 1 : 0);
        } else if constexpr (std::is_same_v<T, PurgeCommand>) {
          out.u8(static_cast<uint8_t>(Kind::purge));
        } else if constexpr (std::is_same_v<T, ExpireCommand>) {
          out.u8(static_cast<uint8_t>(Kind::expire));
        } else if constexpr (std::is_same_v<T, SuspendCommand>) {
          out.u8(static_cast<uint8_t>(Kind::suspend));
          out.u64(body.consumer.value);
          out.u8(body.suspend ? 1 : 0);
        } else if constexpr (std::is_same_v<T, HandedOverCommand>) {
          out.u8(static_cast<uint8_t>(Kind::handed_over));
          write_ids(out, body.ids);
        }
      },
      command.body);
  return std::string(bytes.begin(), bytes.end());
}

bool restamp_command(std::string& encoded, uint64_t time_ms) {
  // version:u8 time:u64 (big-endian) body
  constexpr size_t time_offset = 1;
  if (encoded.size() < time_offset + 8 || !known_version(static_cast<uint8_t>(encoded[0]))) {
    return false;
  }
  for (size_t i = 0; i < 8; ++i) {
    encoded[time_offset + i] = static_cast<char>(time_ms >> (56 - 8 * i));
  }
  return true;
}

std::optional<uint64_t> command_time(std::string_view encoded) {
  if (encoded.size() < 9 || !known_version(static_cast<uint8_t>(encoded[0]))) {
    return std::nullopt;
  }
  uint64_t time_ms = 0;
  for (size_t i = 1; i < 9; ++i) time_ms = time_ms << 8 | static_cast<uint8_t>(encoded[i]);
  return time_ms;
}

std::optional<CommandOrigin> command_origin(std::string_view encoded) {
  if (encoded.empty() || !known_version(static_cast<uint8_t>(encoded[0]))) return std::nullopt;
  if (static_cast<uint8_t>(encoded[0]) == command_format_without_origin) return CommandOrigin{};
  if (encoded.size() < 9 + 24) return std::nullopt;
  auto read = [&](size_t at) {
    uint64_t value = 0;
    for (size_t i = at; i < at + 8; ++i) value = value << 8 | static_cast<uint8_t>(encoded[i]);
    return value;
  };
  return CommandOrigin{read(9), read(17), read(25)};
}

Result<QueueCommand, std::string> decode_command(std::string_view bytes) {
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  QueueCommand command;
  uint8_t version = in.u8();
  if (!in.failed() && !known_version(version)) {
    return unexpected("unknown command format version " + std::to_string(version));
  }
  command.time_ms = in.u64();
  if (version != command_format_without_origin) {
    command.origin.proposer = in.u64();
    command.origin.seq = in.u64();
    command.origin.floor = in.u64();
  }
  auto kind = static_cast<Kind>(in.u8());
  if (in.failed()) return unexpected(std::string("truncated"));
  auto flag = [&](uint8_t byte, uint8_t allowed) { return (byte & ~allowed) == 0; };
  switch (kind) {
    case Kind::enqueue: {
      EnqueueCommand body;
      uint8_t flags = in.u8();
      uint64_t ttl = in.u64();
      if (!flag(flags, enqueue_has_ttl | enqueue_handed_over)) {
        return unexpected(std::string("bad flags"));
      }
      if (flags & enqueue_has_ttl) body.ttl_ms = ttl;
      if (flags & enqueue_handed_over) {
        HandOverKey from;
        from.source = in.u64();
        from.id = in.u64();
        if (in.failed()) return unexpected(std::string("truncated"));
        if (from.source == 0 || from.id == 0) return unexpected(std::string("bad hand-over"));
        body.from = from;
      }
      auto message = decode_message(in);
      if (!message.ok()) return unexpected(message.error());
      body.message = std::move(*message);
      command.body = std::move(body);
      break;
    }
    case Kind::attach: {
      AttachCommand body;
      body.consumer.value = in.u64();
      body.prefetch_count = in.u32();
      body.priority = static_cast<int64_t>(in.u64());
      uint8_t flags = in.u8();
      if (!flag(flags, 3)) return unexpected(std::string("bad flags"));
      body.no_ack = flags & 1;
      body.exclusive = flags & 2;
      command.body = body;
      break;
    }
    case Kind::cancel:
      command.body = CancelCommand{HolderId{in.u64()}};
      break;
    case Kind::detach:
      command.body = DetachCommand{HolderId{in.u64()}};
      break;
    case Kind::settle: {
      SettleCommand body;
      uint8_t how = in.u8();
      if (how > 2) return unexpected(std::string("bad settle kind"));
      body.kind = static_cast<SettleKind>(how);
      body.holder.value = in.u64();
      if (!read_ids(in, body.ids)) return unexpected(std::string("bad id count"));
      command.body = std::move(body);
      break;
    }
    case Kind::handed_over: {
      HandedOverCommand body;
      if (!read_ids(in, body.ids)) return unexpected(std::string("bad id count"));
      command.body = std::move(body);
      break;
    }
    case Kind::get: {
      GetCommand body;
      body.holder.value = in.u64();
      uint8_t no_ack = in.u8();
      if (!flag(no_ack, 1)) return unexpected(std::string("bad flags"));
      body.no_ack = no_ack;
      command.body = body;
      break;
    }
    case Kind::purge:
      command.body = PurgeCommand{};
      break;
    case Kind::expire:
      command.body = ExpireCommand{};
      break;
    case Kind::suspend: {
      SuspendCommand body;
      body.consumer.value = in.u64();
      uint8_t suspend = in.u8();
      if (!flag(suspend, 1)) return unexpected(std::string("bad flags"));
      body.suspend = suspend;
      command.body = body;
      break;
    }
    default:
      return unexpected("unknown command kind " + std::to_string(static_cast<int>(kind)));
  }
  if (in.failed()) return unexpected(std::string("truncated"));
  if (in.remaining() != 0) return unexpected(std::string("trailing bytes"));
  return command;
}

CommandEffects apply_command(QueueMachine& machine, const QueueCommand& command,
                             uint64_t log_index) {
  CommandEffects effects;
  const uint64_t now = command.time_ms;
  const CommandOrigin& origin = command.origin;
  if (origin.proposer != 0) {
    switch (machine.admit(origin.proposer, origin.seq, origin.floor)) {
      case QueueMachine::Admission::first:
        break;
      case QueueMachine::Admission::copy:
        effects.duplicate = true;
        return effects;
      case QueueMachine::Admission::early:
        effects.early = true;
        return effects;
    }
  }
  std::visit(
      [&](const auto& body) {
        using T = std::decay_t<decltype(body)>;
        if constexpr (std::is_same_v<T, EnqueueCommand>) {
          if (body.from && machine.took_hand_over(*body.from)) {
            effects.enqueued = EnqueueResult::accepted;  // here already, or was
            return;
          }
          effects.enqueued =
              body.ttl_ms ? machine.enqueue_for(body.message, *body.ttl_ms, now, effects.deliveries,
                                                log_index)
                          : machine.enqueue(body.message, now, effects.deliveries, log_index);
          // A refused one is offered again later, and must be taken then.
          if (body.from && effects.enqueued != EnqueueResult::rejected) {
            machine.record_hand_over(*body.from);
          }
        } else if constexpr (std::is_same_v<T, AttachCommand>) {
          effects.attached = machine.attach(body.consumer,
                                            ConsumerOptions{.prefetch_count = body.prefetch_count,
                                                            .priority = body.priority,
                                                            .no_ack = body.no_ack,
                                                            .exclusive = body.exclusive},
                                            now, effects.deliveries);
        } else if constexpr (std::is_same_v<T, CancelCommand>) {
          machine.cancel(body.consumer);
        } else if constexpr (std::is_same_v<T, DetachCommand>) {
          effects.count = machine.detach(body.holder, now, effects.deliveries);
        } else if constexpr (std::is_same_v<T, SettleCommand>) {
          switch (body.kind) {
            case SettleKind::settle:
              machine.settle(body.holder, body.ids, now, effects.deliveries);
              break;
            case SettleKind::requeue:
              machine.requeue(body.holder, body.ids, now, effects.deliveries);
              break;
            case SettleKind::discard:
              machine.discard(body.holder, body.ids, now, effects.deliveries);
              break;
          }
        } else if constexpr (std::is_same_v<T, GetCommand>) {
          effects.got = machine.get(body.holder, body.no_ack, now);
        } else if constexpr (std::is_same_v<T, PurgeCommand>) {
          effects.count = machine.purge();
        } else if constexpr (std::is_same_v<T, ExpireCommand>) {
          machine.expire(now, effects.deliveries);
        } else if constexpr (std::is_same_v<T, SuspendCommand>) {
          if (body.suspend) {
            machine.suspend(body.consumer);
          } else {
            machine.resume(body.consumer, now, effects.deliveries);
          }
        } else if constexpr (std::is_same_v<T, HandedOverCommand>) {
          machine.handed_over(body.ids);
        }
      },
      command.body);
  return effects;
}

namespace {

constexpr uint8_t relayed_format_version = 1;
// The least a delivery takes: holder, id, flags, count, and an empty message.
constexpr size_t relayed_delivery_bytes_min = 8 + 8 + 1 + 4 + 1 + 1 + 4 + 8;

void encode_delivery(amqp::WireWriter& out, const Delivery& delivery) {
  HAMQ_VERIFY(delivery.message != nullptr, "a relayed delivery without its message");
  out.u64(delivery.holder.value);
  out.u64(delivery.id.value);
  out.u8(delivery.redelivered ? 1 : 0);
  out.u32(delivery.delivery_count);
  encode_message(out, *delivery.message);
}

Result<Delivery, std::string> decode_delivery(amqp::WireReader& in) {
  Delivery delivery;
  delivery.holder.value = in.u64();
  delivery.id.value = in.u64();
  uint8_t redelivered = in.u8();
  delivery.delivery_count = in.u32();
  if (in.failed()) return unexpected(std::string("truncated"));
  if (redelivered > 1) return unexpected(std::string("bad flags"));
  delivery.redelivered = redelivered == 1;
  auto message = decode_message(in);
  if (!message.ok()) return unexpected(message.error());
  delivery.message = std::move(*message);
  return delivery;
}

}  // namespace

std::string encode_relayed(const RelayedEffects& relayed) {
  std::vector<uint8_t> bytes;
  amqp::WireWriter out(bytes);
  const CommandEffects& effects = relayed.effects;
  out.u8(relayed_format_version);
  out.u64(relayed.number);
  out.u64(relayed.seq);
  out.u64(relayed.ready);
  out.u64(relayed.consumers);
  out.u64(relayed.applied);
  out.u8(effects.duplicate ? 1 : 0);
  out.u8(effects.enqueued ? 1 + static_cast<uint8_t>(*effects.enqueued) : 0);
  out.u8(effects.attached ? 1 + static_cast<uint8_t>(*effects.attached) : 0);
  out.u64(effects.count);
  out.u8(effects.got ? 1 : 0);
  if (effects.got) encode_delivery(out, *effects.got);
  out.u32(static_cast<uint32_t>(effects.deliveries.size()));
  for (const Delivery& delivery : effects.deliveries) encode_delivery(out, delivery);
  out.u32(static_cast<uint32_t>(relayed.cancelled.size()));
  for (HolderId holder : relayed.cancelled) out.u64(holder.value);
  return std::string(bytes.begin(), bytes.end());
}

Result<RelayedEffects, std::string> decode_relayed(std::string_view bytes) {
  amqp::WireReader in({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  RelayedEffects relayed;
  CommandEffects& effects = relayed.effects;
  uint8_t version = in.u8();
  if (!in.failed() && version != relayed_format_version) {
    return unexpected("unknown relayed effects version " + std::to_string(version));
  }
  relayed.number = in.u64();
  relayed.seq = in.u64();
  relayed.ready = in.u64();
  relayed.consumers = in.u64();
  relayed.applied = in.u64();
  uint8_t duplicate = in.u8();
  uint8_t enqueued = in.u8();
  uint8_t attached = in.u8();
  effects.count = in.u64();
  uint8_t has_got = in.u8();
  if (in.failed()) return unexpected(std::string("truncated"));
  if (duplicate > 1 || has_got > 1) return unexpected(std::string("bad flags"));
  if (enqueued > 1 + static_cast<uint8_t>(EnqueueResult::rejected)) {
    return unexpected(std::string("bad enqueue result"));
  }
  if (attached > 1 + static_cast<uint8_t>(AttachResult::already_attached)) {
    return unexpected(std::string("bad attach result"));
  }
  effects.duplicate = duplicate == 1;
  if (enqueued != 0) effects.enqueued = static_cast<EnqueueResult>(enqueued - 1);
  if (attached != 0) effects.attached = static_cast<AttachResult>(attached - 1);
  if (has_got == 1) {
    auto got = decode_delivery(in);
    if (!got.ok()) return unexpected(got.error());
    effects.got = std::move(*got);
  }
  uint32_t count = in.u32();
  if (in.failed()) return unexpected(std::string("truncated"));
  if (uint64_t{count} * relayed_delivery_bytes_min > in.remaining()) {
    return unexpected(std::string("bad delivery count"));
  }
  effects.deliveries.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    auto delivery = decode_delivery(in);
    if (!delivery.ok()) return unexpected(delivery.error());
    effects.deliveries.push_back(std::move(*delivery));
  }
  uint32_t cancelled = in.u32();
  if (in.failed() || uint64_t{cancelled} * 8 > in.remaining()) {
    return unexpected(std::string("bad holder count"));
  }
  relayed.cancelled.reserve(cancelled);
  for (uint32_t i = 0; i < cancelled; ++i) relayed.cancelled.push_back(HolderId{in.u64()});
  if (in.remaining() != 0) return unexpected(std::string("trailing bytes"));
  return relayed;
}

}  // namespace hamq::queue
