// Channel: the methods of the exchange and queue classes, which change definitions through the
// metadata log (Broker::change_definitions) or look at them (channel.h).
#include "broker/channel.h"
#include "broker/channel_internal.h"
#include "broker/connection.h"

namespace hamq::broker {

using amqp::ReplyCode;
using channel_detail::error;

// Definitions ------------------------------------------------------------------------------------

Result<void, ProtocolError> Channel::change_definitions(MetadataCommand command, uint16_t class_id,
                                                        uint16_t method_id, DefinitionReply reply) {
  // The change is made when the metadata log applies it: the reply, and every frame after it on
  // this connection, wait until then. Without a log it is applied before the broker returns.
  struct Call {
    bool returned = false;
    std::optional<Broker::DefinitionResult> result;
  };
  auto call = std::make_shared<Call>();
  await_reply();
  connection_.broker().change_definitions(
      std::move(command), [handle = handle(), call, reply, class_id,
                           method_id](const Broker::DefinitionResult& result) {
        if (!call->returned) {
          call->result = result;
          return;
        }
        Channel* channel = from(handle);
        if (channel == nullptr) return;
        channel->reply_done();
        if (!result.ok()) {
          ProtocolError failed = result.error();
          failed.class_id = class_id;
          failed.method_id = method_id;
          channel->connection_.fail_later(channel->number_, failed);  // may destroy the channel
          return;
        }
        reply(*channel, result.value());
      });
  call->returned = true;
  if (!call->result) return Ok{};
  reply_done();
  if (!call->result->ok()) return unexpected(call->result->error());
  reply(*this, call->result->value());
  return Ok{};
}

Result<void, ProtocolError> Channel::after_barrier(
    uint16_t class_id, uint16_t method_id,
    std::function<Result<void, ProtocolError>(Channel&)> look) {
  // Whether the barrier passed or not (no leader can be reached: this node is cut off), the look
  // is answered from what this node has then: stale rather than unavailable.
  await_reply();
  connection_.broker().change_definitions(
      Barrier{}, [handle = handle(), look = std::move(look), class_id,
                  method_id](const Broker::DefinitionResult&) {
        Channel* channel = from(handle);
        if (channel == nullptr) return;
        channel->reply_done();
        channel->looking_after_barrier_ = true;
        auto looked = look(*channel);
        channel->looking_after_barrier_ = false;
        if (!looked.ok()) {
          ProtocolError failed = looked.error();
          failed.class_id = class_id;
          failed.method_id = method_id;
          channel->connection_.fail_later(channel->number_, failed);  // may destroy the channel
        }
      });
  return Ok{};
}

// Exchanges --------------------------------------------------------------------------------------

Result<void, ProtocolError> Channel::exchange_declare(const amqp::ExchangeDeclare& m) {
  using M = amqp::ExchangeDeclare;
  if (m.passive && !m.exchange.empty() && vhost().find_exchange(m.exchange) == nullptr &&
      connection_.broker().clustered() && !looking_after_barrier_) {
    return after_barrier(M::amqp_class_id, M::amqp_method_id,
                         [m](Channel& channel) { return channel.exchange_declare(m); });
  }
  if (m.passive || m.exchange.empty() || vhost().find_exchange(m.exchange) != nullptr) {
    // A look, or a redeclare: checked here (it changes nothing).
    auto result = vhost().declare_exchange(
        {m.exchange, m.type, m.passive, m.durable, m.auto_delete, m.internal, m.arguments});
    if (result.ok() && !m.nowait) connection_.send(number_, amqp::ExchangeDeclareOk{});
    return result;
  }
  return change_definitions(
      DeclareExchange{{vhost().name(), m.exchange, m.type, m.auto_delete, m.internal, m.arguments,
                       0, m.durable, connection_.broker().node_id()}},
      M::amqp_class_id, M::amqp_method_id, [nowait = m.nowait](Channel& channel, uint64_t) {
        if (!nowait) channel.connection_.send(channel.number_, amqp::ExchangeDeclareOk{});
      });
}

Result<void, ProtocolError> Channel::exchange_delete(const amqp::ExchangeDelete& m) {
  using M = amqp::ExchangeDelete;
  auto deleted = [nowait = m.nowait](Channel& channel, uint64_t) {
    if (!nowait) channel.connection_.send(channel.number_, amqp::ExchangeDeleteOk{});
  };
  if (!m.exchange.empty() && vhost().find_exchange(m.exchange) == nullptr &&
      !m.exchange.starts_with("amq.")) {
    deleted(*this, 0);  // nothing to delete
    return Ok{};
  }
  return change_definitions(DeleteExchange{vhost().name(), m.exchange, m.if_unused},
                            M::amqp_class_id, M::amqp_method_id, deleted);
}

Result<void, ProtocolError> Channel::bind(const std::string& source, Binding binding, bool nowait,
                                          uint16_t class_id, uint16_t method_id,
                                          const amqp::Method& ok) {
  auto reply = [nowait, ok](Channel& channel, uint64_t) {
    if (!nowait) channel.connection_.send(channel.number_, ok);
  };
  if (vhost().has_binding(source, binding)) {
    // Bound already: the checks are made here (it changes nothing).
    auto checked = vhost().bind(source, binding, connection_.id());
    if (checked.ok()) reply(*this, 0);
    return checked;
  }
  return change_definitions(Bind{{vhost().name(), source, std::move(binding)}, connection_.id()},
                            class_id, method_id, reply);
}

Result<void, ProtocolError> Channel::unbind(const std::string& source, Binding binding, bool nowait,
                                            uint16_t class_id, uint16_t method_id,
                                            const amqp::Method& ok) {
  auto reply = [nowait, ok](Channel& channel, uint64_t) {
    if (!nowait) channel.connection_.send(channel.number_, ok);
  };
  if (!vhost().has_binding(source, binding)) {
    // Not bound: the checks are made here (it changes nothing).
    auto checked = vhost().unbind(source, binding, connection_.id());
    if (checked.ok()) reply(*this, 0);
    return checked;
  }
  return change_definitions(Unbind{{vhost().name(), source, std::move(binding)}, connection_.id()},
                            class_id, method_id, reply);
}

Result<void, ProtocolError> Channel::exchange_bind(const amqp::ExchangeBind& m) {
  using M = amqp::ExchangeBind;
  return bind(m.source, {m.destination, false, m.routing_key, m.arguments}, m.nowait,
              M::amqp_class_id, M::amqp_method_id, amqp::ExchangeBindOk{});
}

Result<void, ProtocolError> Channel::exchange_unbind(const amqp::ExchangeUnbind& m) {
  using M = amqp::ExchangeUnbind;
  return unbind(m.source, {m.destination, false, m.routing_key, m.arguments}, m.nowait,
                M::amqp_class_id, M::amqp_method_id, amqp::ExchangeUnbindOk{});
}

// Queues -----------------------------------------------------------------------------------------

Result<std::string, ProtocolError> Channel::resolve_queue_name(const std::string& name) const {
  if (!name.empty()) return name;
  if (last_declared_queue_.empty()) {
    return unexpected(error(ReplyCode::not_found, "no previously declared queue"));
  }
  return last_declared_queue_;
}

Result<void, ProtocolError> Channel::queue_declare(const amqp::QueueDeclare& m) {
  using M = amqp::QueueDeclare;
  std::string name = m.queue;
  if (name == reply_to_queue || name.starts_with(reply_to_prefix)) {
    // The pseudo-queue always "exists"; a reply name exists while its requester consumes.
    uint32_t consumers = name == reply_to_queue ? 0 : 1;
    if (name != reply_to_queue && connection_.broker().find_reply_consumer(name) == nullptr) {
      return unexpected(
          error(ReplyCode::not_found, "no queue '" + name + "' in vhost '" + vhost().name() + "'"));
    }
    if (!m.nowait) connection_.send(number_, amqp::QueueDeclareOk{name, 0, consumers});
    return Ok{};
  }
  if (name.empty() && !m.passive) {
    name = connection_.broker().random_name("amq.gen-");
  } else if (name.empty()) {
    auto resolved = resolve_queue_name(name);
    if (!resolved.ok()) return unexpected(resolved.error());
    name = resolved.value();
  } else if (!m.passive && name.starts_with("amq.")) {
    return unexpected(error(ReplyCode::access_refused,
                            "queue name '" + name + "' contains reserved prefix 'amq.*'"));
  }
  if (m.passive && vhost().find_queue(name) == nullptr && connection_.broker().clustered() &&
      !looking_after_barrier_) {
    amqp::QueueDeclare again = m;
    again.queue = name;
    return after_barrier(M::amqp_class_id, M::amqp_method_id,
                         [again](Channel& channel) { return channel.queue_declare(again); });
  }
  if (m.passive || vhost().find_queue(name) != nullptr) {
    // A look, or a redeclare: checked here (it changes nothing).
    auto queue = vhost().declare_queue(
        {name, m.passive, m.durable, m.exclusive, m.auto_delete, m.arguments}, connection_.id());
    if (!queue.ok()) return unexpected(queue.error());
    queue_declared(queue.value(), name, m.passive, m.nowait);
    return Ok{};
  }
  return change_definitions(
      DeclareQueue{{vhost().name(),
                    name,
                    0,
                    m.auto_delete,
                    m.arguments,
                    m.durable,
                    m.exclusive ? connection_.id() : 0,
                    connection_.broker().node_id(),
                    {}},
                   connection_.id()},
      M::amqp_class_id, M::amqp_method_id, [name, nowait = m.nowait](Channel& channel, uint64_t) {
        QueuePtr queue = channel.vhost().find_queue(name);
        if (!queue) {
          // Deleted again before this reply could go (an expiry, another connection).
          channel.connection_.fail_later(
              channel.number_,
              ProtocolError{ReplyCode::not_found,
                            "no queue '" + name + "' in vhost '" + channel.vhost().name() + "'",
                            M::amqp_class_id, M::amqp_method_id});
          return;
        }
        channel.queue_declared(queue, name, false, nowait);
      });
}

void Channel::queue_declared(const QueuePtr& queue, const std::string& name, bool passive,
                             bool nowait) {
  last_declared_queue_ = name;
  // A redeclare renews an x-expires lease; a passive one (a look) does not, nor does any for a
  // quorum queue (reference: quorum-queues.md).
  const auto* type = queue->arguments.find("x-queue-type");
  bool quorum = type != nullptr && *type == amqp::FieldValue("quorum");
  if (!passive && !quorum) connection_.broker().queue_used(queue);
  if (nowait) return;
  Broker& broker = connection_.broker();
  auto declare_ok = [name, &broker](const QueuePtr& declared) {
    return amqp::QueueDeclareOk{name, static_cast<uint32_t>(broker.ready_count(*declared)),
                                static_cast<uint32_t>(broker.consumer_count(*declared))};
  };
  if (queue->pending_commands.empty() && !broker.relayed(*queue)) {
    connection_.send(number_, declare_ok(queue));
    return;
  }
  // The counts include what was proposed before (a message just published is counted): the
  // reply waits for a command that changes nothing to be applied after those. (Through another
  // node's member, its answer brings the counts.)
  await_reply();
  broker.execute(
      queue, broker.command(queue::ExpireCommand{}),
      [handle = handle(), declare_ok](const QueuePtr& declared, const queue::CommandEffects*) {
        Channel* channel = from(handle);
        if (channel == nullptr) return;
        channel->connection_.send(channel->number_, declare_ok(declared));
        channel->reply_done();
      });
}

Result<void, ProtocolError> Channel::queue_bind(const amqp::QueueBind& m) {
  using M = amqp::QueueBind;
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  if (name.value().starts_with(reply_to_queue)) {
    return unexpected(error(ReplyCode::access_refused, "cannot bind the direct reply-to queue"));
  }
  // An empty queue name and routing key bind with the queue's own name (reference §11.1).
  std::string key = m.queue.empty() && m.routing_key.empty() ? name.value() : m.routing_key;
  return bind(m.exchange, {name.value(), true, key, m.arguments}, m.nowait, M::amqp_class_id,
              M::amqp_method_id, amqp::QueueBindOk{});
}

Result<void, ProtocolError> Channel::queue_unbind(const amqp::QueueUnbind& m) {
  using M = amqp::QueueUnbind;
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  std::string key = m.queue.empty() && m.routing_key.empty() ? name.value() : m.routing_key;
  // queue.unbind has no nowait: the reply always goes.
  return unbind(m.exchange, {name.value(), true, key, m.arguments}, false, M::amqp_class_id,
                M::amqp_method_id, amqp::QueueUnbindOk{});
}

Result<void, ProtocolError> Channel::queue_purge(const amqp::QueuePurge& m) {
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  auto queue = vhost().use_queue(name.value(), connection_.id());
  if (!queue.ok()) return unexpected(queue.error());
  await_reply();
  Broker& broker = connection_.broker();
  broker.execute(queue.value(), broker.command(queue::PurgeCommand{}),
                 [handle = handle(), nowait = m.nowait](const QueuePtr&,
                                                        const queue::CommandEffects* effects) {
                   Channel* channel = from(handle);
                   if (channel == nullptr) return;
                   auto purged = static_cast<uint32_t>(effects != nullptr ? effects->count : 0);
                   if (!nowait)
                     channel->connection_.send(channel->number_, amqp::QueuePurgeOk{purged});
                   channel->reply_done();
                 });
  return Ok{};
}

Result<void, ProtocolError> Channel::queue_delete(const amqp::QueueDelete& m) {
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  auto queue = vhost().use_queue(name.value(), connection_.id());
  if (!queue.ok()) {
    if (queue.error().code != ReplyCode::not_found) return unexpected(queue.error());
    // Deleting a queue that does not exist succeeds.
    if (!m.nowait) connection_.send(number_, amqp::QueueDeleteOk{0});
    return Ok{};
  }
  using M = amqp::QueueDelete;
  Broker& broker = connection_.broker();
  const QueuePtr& target = queue.value();
  if ((m.if_unused || m.if_empty) && broker.relayed(*target) && !looking_after_relay_) {
    // Its counts are another node's: asked for first (a command that changes nothing).
    await_reply();
    broker.execute(
        target, broker.command(queue::ExpireCommand{}),
        [handle = handle(), m](const QueuePtr&, const queue::CommandEffects* effects) {
          Channel* channel = from(handle);
          if (channel == nullptr) return;
          channel->reply_done();
          Result<void, ProtocolError> result = unexpected(error(
              ReplyCode::resource_locked, "cannot reach a node holding queue '" + m.queue + "'"));
          if (effects != nullptr) {
            channel->looking_after_relay_ = true;
            result = channel->queue_delete(m);
            channel->looking_after_relay_ = false;
          }
          if (!result.ok()) {
            ProtocolError failed = result.error();
            failed.class_id = M::amqp_class_id;
            failed.method_id = M::amqp_method_id;
            channel->connection_.fail_later(channel->number_, failed);  // may destroy the channel
          }
        });
    return Ok{};
  }
  std::string where = "queue '" + name.value() + "' in vhost '" + vhost().name() + "'";
  if (m.if_unused && broker.consumer_count(*target) > 0) {
    return unexpected(error(ReplyCode::precondition_failed, where + " in use"));
  }
  if (m.if_empty && broker.ready_count(*target) > 0) {
    return unexpected(error(ReplyCode::precondition_failed, where + " not empty"));
  }
  return change_definitions(
      DeleteQueue{vhost().name(), name.value()}, M::amqp_class_id, M::amqp_method_id,
      [nowait = m.nowait](Channel& channel, uint64_t count) {
        if (nowait) return;
        channel.connection_.send(channel.number_,
                                 amqp::QueueDeleteOk{static_cast<uint32_t>(count)});
      });
}

}  // namespace hamq::broker
