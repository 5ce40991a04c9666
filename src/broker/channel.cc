#include "broker/channel.h"

#include <algorithm>

#include "broker/channel_internal.h"
#include "broker/connection.h"
#include "common/verify.h"

namespace hamq::broker {

using amqp::Method;
using amqp::ReplyCode;
using channel_detail::error;

namespace {

// What is wrong with a message's `expiration` (a decimal count of milliseconds), or null.
const char* expiration_problem(const amqp::BasicProperties& properties) {
  if (!properties.expiration) return nullptr;
  std::string_view text = *properties.expiration;
  size_t digits_from = (!text.empty() && (text[0] == '-' || text[0] == '+')) ? 1 : 0;
  size_t end = digits_from;
  while (end < text.size() && text[end] >= '0' && text[end] <= '9') ++end;
  if (end == digits_from) return "no_integer";
  if (end != text.size()) return "leftover_string";
  bool zero = text.find_first_not_of('0', digits_from) == std::string_view::npos;
  if (text[0] == '-' && !zero) return "value_negative";
  if (end - digits_from > 18) return "leftover_string";  // beyond any TTL worth keeping
  return nullptr;
}

// The CC and BCC headers (reference §10.7): extra routing keys, each an array of long strings.
Result<std::vector<std::string>, ProtocolError> sender_selected_keys(
    const amqp::BasicProperties& properties) {
  std::vector<std::string> keys;
  if (!properties.headers) return keys;
  for (const char* name : {"CC", "BCC"}) {
    const amqp::FieldValue* value = properties.headers->find(name);
    if (value == nullptr) continue;
    const auto* array = std::get_if<amqp::FieldArray>(&value->value);
    if (array == nullptr) {
      return unexpected(error(ReplyCode::precondition_failed,
                              std::string("invalid header '") + name + "': expected an array"));
    }
    for (const auto& key : array->values) {
      const auto* text = std::get_if<std::string>(&key.value);
      if (text == nullptr) {
        return unexpected(
            error(ReplyCode::precondition_failed,
                  std::string("invalid header '") + name + "': expected an array of strings"));
      }
      keys.push_back(*text);
    }
  }
  return keys;
}

}  // namespace

Channel::Channel(Connection& connection, uint16_t number)
    : connection_(connection),
      number_(number),
      alive_(std::make_shared<Channel*>(this)),
      get_holder_(connection.broker().new_holder()) {}

Channel::~Channel() {
  HAMQ_VERIFY(released_, "a channel destroyed without release()");
}

VirtualHost& Channel::vhost() {
  return connection_.virtual_host();
}

Result<void, ProtocolError> Channel::handle_method(const Method& method) {
  return std::visit(
      [&](const auto& m) -> Result<void, ProtocolError> {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, amqp::ExchangeDeclare>)
          return exchange_declare(m);
        else if constexpr (std::is_same_v<M, amqp::ExchangeDelete>)
          return exchange_delete(m);
        else if constexpr (std::is_same_v<M, amqp::ExchangeBind>)
          return exchange_bind(m);
        else if constexpr (std::is_same_v<M, amqp::ExchangeUnbind>)
          return exchange_unbind(m);
        else if constexpr (std::is_same_v<M, amqp::QueueDeclare>)
          return queue_declare(m);
        else if constexpr (std::is_same_v<M, amqp::QueueBind>)
          return queue_bind(m);
        else if constexpr (std::is_same_v<M, amqp::QueueUnbind>)
          return queue_unbind(m);
        else if constexpr (std::is_same_v<M, amqp::QueuePurge>)
          return queue_purge(m);
        else if constexpr (std::is_same_v<M, amqp::QueueDelete>)
          return queue_delete(m);
        else if constexpr (std::is_same_v<M, amqp::BasicQos>)
          return basic_qos(m);
        else if constexpr (std::is_same_v<M, amqp::BasicConsume>)
          return basic_consume(m);
        else if constexpr (std::is_same_v<M, amqp::BasicCancel>)
          return basic_cancel(m);
        else if constexpr (std::is_same_v<M, amqp::BasicPublish>)
          return basic_publish(m);
        else if constexpr (std::is_same_v<M, amqp::BasicGet>)
          return basic_get(m);
        else if constexpr (std::is_same_v<M, amqp::BasicAck>) {
          return settle(m.delivery_tag, m.multiple, Settle::ack);
        } else if constexpr (std::is_same_v<M, amqp::BasicReject>) {
          return settle(m.delivery_tag, false, m.requeue ? Settle::requeue : Settle::discard);
        } else if constexpr (std::is_same_v<M, amqp::BasicNack>) {
          return settle(m.delivery_tag, m.multiple, m.requeue ? Settle::requeue : Settle::discard);
        } else if constexpr (std::is_same_v<M, amqp::BasicRecover>) {
          auto result = recover(m.requeue);
          if (result.ok()) connection_.send(number_, amqp::BasicRecoverOk{});
          return result;
        } else if constexpr (std::is_same_v<M, amqp::BasicRecoverAsync>) {
          return recover(m.requeue);
        } else if constexpr (std::is_same_v<M, amqp::ConfirmSelect>)
          return confirm_select(m);
        else if constexpr (std::is_same_v<M, amqp::TxSelect>)
          return tx_select();
        else if constexpr (std::is_same_v<M, amqp::TxCommit>)
          return tx_commit();
        else if constexpr (std::is_same_v<M, amqp::TxRollback>)
          return tx_rollback();
        else {
          return unexpected(error(ReplyCode::command_invalid,
                                  std::string(M::name) + " is not valid on a channel"));
        }
      },
      method);
}

// Consuming --------------------------------------------------------------------------------------

Result<void, ProtocolError> Channel::basic_qos(const amqp::BasicQos& m) {
  if (m.prefetch_size != 0) {
    return unexpected(error(ReplyCode::not_implemented,
                            "prefetch_size!=0 (" + std::to_string(m.prefetch_size) + ")"));
  }
  if (m.global) {
    global_prefetch_ = m.prefetch_count;
    reset_global_credit();
  } else {
    prefetch_count_ = m.prefetch_count;
  }
  connection_.send(number_, amqp::BasicQosOk{});
  if (m.global) deliver_with_new_credit();
  return Ok{};
}

void Channel::reset_global_credit() {
  uint32_t limit = global_prefetch_ == 0 ? unlimited_credit : global_prefetch_;
  global_credit_ = limit > global_in_use_ ? limit - global_in_use_ : 0;
}

void Channel::deliver_with_new_credit() {
  for (auto& [tag, consumer] : consumers_) {
    if (global_credit_ == 0) return;
    // A durable queue's consumers do not share a channel's credit (it is not in its log).
    if (QueuePtr queue = consumer.queue.lock(); queue && queue->group == 0) {
      std::vector<queue::Delivery> deliveries;
      queue->machine.deliver_ready(queue_now(), deliveries);
      connection_.broker().dispatch(queue, deliveries);
    }
  }
}

Result<void, ProtocolError> Channel::basic_consume(const amqp::BasicConsume& m) {
  if (m.queue == reply_to_queue) return consume_replies(m);
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  auto queue = vhost().use_queue(name.value(), connection_.id());
  if (!queue.ok()) return unexpected(queue.error());
  std::string tag = m.consumer_tag;
  if (tag.empty()) tag = connection_.broker().random_name("amq.ctag-");
  if (consumers_.contains(tag)) {
    return unexpected(error(ReplyCode::not_allowed, "attempt to reuse consumer tag '" + tag + "'"));
  }
  queue::ConsumerOptions options;
  options.prefetch_count = prefetch_count_;
  options.shared_credit = &global_credit_;
  options.no_ack = m.no_ack;
  options.exclusive = m.exclusive;
  if (const amqp::FieldValue* priority = m.arguments.find("x-priority")) {
    auto value = priority->as_integer();
    if (!value) {
      return unexpected(
          error(ReplyCode::precondition_failed, "invalid arg 'x-priority': expected an integer"));
    }
    options.priority = *value;
  }
  Broker& broker = connection_.broker();
  const QueuePtr& target = queue.value();
  std::string in_use =
      "queue '" + name.value() + "' in vhost '" + vhost().name() + "' in exclusive use";
  // Checked before consume-ok goes out, since clients that do not wait for a reply (aio-pika)
  // take consume-ok as success. A durable queue attaches the consumer when its entry is
  // applied: the check uses what the queue knows now.
  const auto& machine = target->machine;
  if (machine.has_exclusive_consumer() || (m.exclusive && machine.consumer_count() > 0)) {
    return unexpected(error(ReplyCode::access_refused, in_use));
  }
  HolderId holder = broker.new_holder();
  consumers_.emplace(tag, Consumer{tag, target, holder, m.no_ack});
  consumer_tags_.emplace(holder.value, tag);
  broker.register_sink(holder, this);
  // consume-ok goes out before the first delivery.
  if (!m.nowait) connection_.send(number_, amqp::BasicConsumeOk{tag});
  if (target->group != 0) {
    target->had_consumer = true;
    broker.execute(
        target,
        broker.command(queue::AttachCommand{.consumer = holder,
                                            .prefetch_count = options.prefetch_count,
                                            .priority = options.priority,
                                            .no_ack = options.no_ack,
                                            .exclusive = options.exclusive}),
        [handle = handle(), holder](const QueuePtr&, const queue::CommandEffects* effects) {
          Channel* channel = from(handle);
          if (channel != nullptr &&
              (effects == nullptr || effects->attached != queue::AttachResult::attached)) {
            channel->consumer_cancelled_by_broker(holder);
          }
        });
    return Ok{};
  }
  std::vector<queue::Delivery> deliveries;
  auto attached = target->machine.attach(holder, options, queue_now(), deliveries);
  if (attached != queue::AttachResult::attached) {
    broker.unregister_sink(holder);
    consumers_.erase(tag);
    consumer_tags_.erase(holder.value);
    return unexpected(error(ReplyCode::access_refused, in_use));
  }
  target->had_consumer = true;
  broker.dispatch(target, deliveries);
  return Ok{};
}

Result<void, ProtocolError> Channel::consume_replies(const amqp::BasicConsume& m) {
  if (!m.no_ack) {
    return unexpected(error(ReplyCode::precondition_failed, "reply consumer cannot acknowledge"));
  }
  if (!reply_consumer_tag_.empty()) {
    return unexpected(error(ReplyCode::precondition_failed, "reply consumer already set"));
  }
  std::string tag = m.consumer_tag;
  if (tag.empty()) tag = connection_.broker().random_name("amq.ctag-");
  if (consumers_.contains(tag)) {
    return unexpected(error(ReplyCode::not_allowed, "attempt to reuse consumer tag '" + tag + "'"));
  }
  reply_consumer_tag_ = tag;
  reply_name_ = connection_.broker().register_reply_consumer(this);
  if (!m.nowait) connection_.send(number_, amqp::BasicConsumeOk{tag});
  return Ok{};
}

void Channel::deliver_reply(const queue::Message& message) {
  connection_.send_content(number_,
                           amqp::BasicDeliver{reply_consumer_tag_, next_delivery_tag_++, false,
                                              message.exchange, message.routing_key},
                           message.properties, message.body);
}

Result<void, ProtocolError> Channel::basic_cancel(const amqp::BasicCancel& m) {
  if (!reply_consumer_tag_.empty() && m.consumer_tag == reply_consumer_tag_) {
    connection_.broker().unregister_reply_consumer(reply_name_);
    reply_consumer_tag_.clear();
    reply_name_.clear();
    if (!m.nowait) connection_.send(number_, amqp::BasicCancelOk{m.consumer_tag});
    return Ok{};
  }
  auto it = consumers_.find(m.consumer_tag);
  QueuePtr queue = it == consumers_.end() ? nullptr : it->second.queue.lock();
  // cancel-ok goes once the consumer is gone, and with it an auto-delete queue it was the last
  // consumer of.
  await_reply();
  auto cancelled = [handle = handle(), tag = m.consumer_tag, nowait = m.nowait] {
    Channel* channel = from(handle);
    if (channel == nullptr) return;
    if (!nowait) channel->connection_.send(channel->number_, amqp::BasicCancelOk{tag});
    channel->reply_done();
  };
  if (queue && queue->group != 0) {
    // Deliveries made before the cancel is applied still reach the consumer; cancel-ok follows
    // them.
    Broker& broker = connection_.broker();
    broker.execute(queue, broker.command(queue::CancelCommand{it->second.holder}),
                   [handle = handle(), tag = m.consumer_tag, cancelled](
                       const QueuePtr&, const queue::CommandEffects*) {
                     Channel* channel = from(handle);
                     if (channel != nullptr) channel->cancel_consumer(tag, cancelled);
                   });
    return Ok{};
  }
  // An unknown tag is not an error: the broker may have cancelled it already (reference §7).
  cancel_consumer(m.consumer_tag, cancelled);
  return Ok{};
}

void Channel::cancel_consumer(const std::string& tag, std::function<void()> then) {
  auto it = consumers_.find(tag);
  if (it == consumers_.end()) {
    if (then) then();
    return;
  }
  Consumer consumer = std::move(it->second);
  consumers_.erase(it);
  consumer_tags_.erase(consumer.holder.value);
  connection_.broker().unregister_sink(consumer.holder);
  if (QueuePtr queue = consumer.queue.lock()) {
    if (queue->group == 0) queue->machine.cancel(consumer.holder);  // (else: applied already)
    connection_.broker().check_flow(*queue);
    connection_.broker().queue_used(queue);
    connection_.broker().delete_if_unused(queue, std::move(then));
  } else if (then) {
    then();
  }
}

void Channel::deliver(const QueuePtr& queue, const queue::Delivery& delivery) {
  auto tag_it = consumer_tags_.find(delivery.holder.value);
  HAMQ_VERIFY(tag_it != consumer_tags_.end(), "delivery to a consumer the channel does not know");
  const Consumer& consumer = consumers_.at(tag_it->second);
  uint64_t delivery_tag = next_delivery_tag_++;
  if (!consumer.no_ack) {
    unacked_.emplace(delivery_tag, Unacked{queue, delivery.holder, delivery.id, true});
    ++global_in_use_;  // the queue took a credit for it
  }
  const queue::Message& message = *delivery.message;
  connection_.send_content(number_,
                           amqp::BasicDeliver{consumer.tag, delivery_tag, delivery.redelivered,
                                              message.exchange, message.routing_key},
                           delivery_properties(*queue, delivery), message.body);
}

const amqp::BasicProperties& Channel::delivery_properties(const Queue& queue,
                                                          const queue::Delivery& delivery) {
  const amqp::BasicProperties& properties = delivery.message->properties;
  if (!queue.delivery_count_header || delivery.delivery_count == 0) return properties;
  // Reference §14: times the message came back before, as a long, on redeliveries only.
  redelivery_properties_ = properties;
  if (!redelivery_properties_.headers) redelivery_properties_.headers.emplace();
  auto& entries = redelivery_properties_.headers->entries;
  std::erase_if(entries,
                [](const amqp::FieldTableEntry& e) { return e.name == "x-delivery-count"; });
  entries.emplace_back("x-delivery-count", static_cast<int64_t>(delivery.delivery_count));
  return redelivery_properties_;
}

void Channel::consumer_cancelled_by_broker(HolderId holder) {
  auto tag_it = consumer_tags_.find(holder.value);
  if (tag_it == consumer_tags_.end()) return;
  std::string tag = tag_it->second;
  consumers_.erase(tag);
  consumer_tags_.erase(tag_it);
  connection_.broker().unregister_sink(holder);
  if (connection_.client_supports_cancel_notify()) {
    connection_.send(number_, amqp::BasicCancel{tag, true});
  }
}

Result<void, ProtocolError> Channel::basic_get(const amqp::BasicGet& m) {
  auto name = resolve_queue_name(m.queue);
  if (!name.ok()) return unexpected(name.error());
  auto queue = vhost().use_queue(name.value(), connection_.id());
  if (!queue.ok()) return unexpected(queue.error());
  await_reply();
  Broker& broker = connection_.broker();
  broker.execute(queue.value(), broker.command(queue::GetCommand{get_holder_, m.no_ack}),
                 [handle = handle(), no_ack = m.no_ack](const QueuePtr& from_queue,
                                                        const queue::CommandEffects* effects) {
                   if (Channel* channel = from(handle))
                     channel->get_answered(from_queue, effects, no_ack);
                 });
  broker.queue_used(queue.value());
  return Ok{};
}

void Channel::get_answered(const QueuePtr& queue, const queue::CommandEffects* effects,
                           bool no_ack) {
  reply_done();
  if (effects == nullptr || !effects->got) {
    connection_.send(number_, amqp::BasicGetEmpty{});
    return;
  }
  queue::Delivery delivery = *effects->got;
  if (!delivery.message) {
    delivery.message = connection_.broker().load_message(*queue, delivery.stored_at);
    if (!delivery.message) {
      connection_.send(number_, amqp::BasicGetEmpty{});
      return;
    }
  }
  uint64_t delivery_tag = next_delivery_tag_++;
  if (!no_ack) unacked_.emplace(delivery_tag, Unacked{queue, get_holder_, delivery.id});
  const queue::Message& message = *delivery.message;
  connection_.send_content(
      number_,
      amqp::BasicGetOk{delivery_tag, delivery.redelivered, message.exchange, message.routing_key,
                       static_cast<uint32_t>(connection_.broker().ready_count(*queue))},
      delivery_properties(*queue, delivery), message.body);
}

Result<void, ProtocolError> Channel::settle(uint64_t delivery_tag, bool multiple, Settle how) {
  std::vector<uint64_t> tags;
  if (multiple) {
    auto end = delivery_tag == 0 ? unacked_.end() : unacked_.upper_bound(delivery_tag);
    for (auto it = unacked_.begin(); it != end; ++it) tags.push_back(it->first);
    if (delivery_tag != 0 && !unacked_.contains(delivery_tag) && tags.empty()) {
      return unexpected(error(ReplyCode::precondition_failed,
                              "unknown delivery tag " + std::to_string(delivery_tag)));
    }
  } else {
    if (!unacked_.contains(delivery_tag)) {
      return unexpected(error(ReplyCode::precondition_failed,
                              "unknown delivery tag " + std::to_string(delivery_tag)));
    }
    tags.push_back(delivery_tag);
  }
  if (tx_mode_) {
    // Settled at commit; the tags stay owed until then.
    tx_pending_.push_back([this, tags, how]() { return settle_now(tags, how); });
    return Ok{};
  }
  return settle_now(std::move(tags), how);
}

Result<void, ProtocolError> Channel::settle_now(std::vector<uint64_t> tags, Settle how) {
  // Group by (queue, holder) so each queue gets one command.
  std::map<std::pair<Queue*, uint64_t>, std::pair<QueuePtr, std::vector<queue::MessageId>>> groups;
  for (uint64_t tag : tags) {
    auto it = unacked_.find(tag);
    if (it == unacked_.end()) continue;  // settled since (a transaction settled it twice)
    if (it->second.counts_for_prefetch) {
      // The credit comes back before the queues act, so they can use it at once.
      --global_in_use_;
      ++global_credit_;
    }
    if (QueuePtr queue = it->second.queue.lock()) {
      auto& group = groups[{queue.get(), it->second.holder.value}];
      group.first = queue;
      group.second.push_back(it->second.id);
    }
    unacked_.erase(it);
  }
  queue::SettleKind kind = how == Settle::ack       ? queue::SettleKind::settle
                           : how == Settle::requeue ? queue::SettleKind::requeue
                                                    : queue::SettleKind::discard;
  Broker& broker = connection_.broker();
  for (auto& [key, group] : groups) {
    auto& [queue, ids] = group;
    broker.execute(
        queue, broker.command(queue::SettleCommand{kind, HolderId{key.second}, std::move(ids)}));
  }
  if (global_prefetch_ != 0) deliver_with_new_credit();
  return Ok{};
}

Result<void, ProtocolError> Channel::recover(bool requeue) {
  if (!requeue) {
    return unexpected(error(ReplyCode::not_implemented, "requeue=false"));
  }
  std::vector<uint64_t> tags;
  for (const auto& [tag, unacked] : unacked_) tags.push_back(tag);
  return settle_now(std::move(tags), Settle::requeue);
}

// Publishing -------------------------------------------------------------------------------------

Result<void, ProtocolError> Channel::basic_publish(const amqp::BasicPublish& m) {
  if (m.immediate) return unexpected(error(ReplyCode::not_implemented, "immediate=true"));
  publish_ = m;
  header_.reset();
  body_.clear();
  return Ok{};
}

Result<void, ProtocolError> Channel::handle_content_header(std::span<const uint8_t> payload) {
  auto header = amqp::decode_content_header(payload);
  if (!header.ok()) return unexpected(header.error());
  if (header->body_size > amqp::body_size_bytes_max) {
    return unexpected(
        error(ReplyCode::frame_error,
              "body size " + std::to_string(header->body_size) + " is larger than 512 MiB"));
  }
  uint64_t size_max = connection_.config().message_size_bytes_max;
  if (header->body_size > size_max) {
    publish_.reset();
    return unexpected(error(ReplyCode::precondition_failed,
                            "message size " + std::to_string(header->body_size) +
                                " is larger than configured max size " + std::to_string(size_max)));
  }
  header_ = std::move(header.value());
  // Memory follows the body as it arrives, not what the header announces: a client may claim
  // 128 MiB on every channel and send nothing.
  body_.reserve(std::min<uint64_t>(header_->body_size, body_reserved_up_front_bytes));
  if (header_->body_size == 0) return handle_content_body({});
  return Ok{};
}

Result<void, ProtocolError> Channel::handle_content_body(std::span<const uint8_t> payload) {
  HAMQ_VERIFY(publish_ && header_, "body without a publish and header; the connection checks");
  if (body_.size() + payload.size() > header_->body_size) {
    return unexpected(error(ReplyCode::frame_error, "body larger than its header announced"));
  }
  if (body_.size() + payload.size() > body_.capacity()) {
    // Doubling, but never past the announced size, so the last growth is exact.
    body_.reserve(std::min<uint64_t>(
        header_->body_size,
        std::max<uint64_t>(2 * body_.capacity(), body_.size() + payload.size())));
  }
  body_.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  if (body_.size() < header_->body_size) return Ok{};
  connection_.note_publish();
  auto message = std::make_shared<queue::Message>();
  message->exchange = publish_->exchange;
  message->routing_key = publish_->routing_key;
  message->properties = std::move(header_->properties);
  message->body = std::move(body_);
  amqp::BasicPublish method = std::move(*publish_);
  publish_.reset();
  header_.reset();
  body_ = std::string();
  if (tx_mode_) {
    tx_pending_.push_back([this, method, message = queue::MessagePtr(message)]() {
      return publish(method, message);
    });
    return Ok{};
  }
  return publish(method, std::move(message));
}

Result<void, ProtocolError> Channel::publish(const amqp::BasicPublish& method,
                                             queue::MessagePtr message) {
  uint64_t seq = confirm_mode_ ? next_publish_seq_++ : 0;
  const Exchange* exchange = vhost().find_exchange(method.exchange);
  if (exchange == nullptr) {
    return unexpected(error(ReplyCode::not_found, "no exchange '" + method.exchange +
                                                      "' in vhost '" + vhost().name() + "'"));
  }
  if (exchange->internal) {
    return unexpected(error(ReplyCode::access_refused, "cannot publish to internal exchange '" +
                                                           method.exchange + "' in vhost '" +
                                                           vhost().name() + "'"));
  }
  if (message->properties.user_id && *message->properties.user_id != connection_.user()) {
    return unexpected(error(ReplyCode::precondition_failed,
                            "user_id property set to '" + *message->properties.user_id +
                                "' but authenticated user was '" + connection_.user() + "'"));
  }
  if (const char* problem = expiration_problem(message->properties)) {
    // As RabbitMQ words it (reference §12), from Erlang's string:to_integer.
    return unexpected(error(
        ReplyCode::precondition_failed,
        "invalid expiration '" + *message->properties.expiration + "': {error," + problem + "}"));
  }
  auto extra_keys = sender_selected_keys(message->properties);
  if (!extra_keys.ok()) return unexpected(extra_keys.error());
  const auto& headers = message->properties.headers;
  // A delayed exchange holds the message until its time (reference §16); it is routed then,
  // BCC and all.
  std::optional<uint64_t> delay_ms;
  if (exchange->delayed) delay_ms = message_delay_ms(message->properties);
  // BCC routes but is never seen by consumers.
  bool strip_bcc = headers && headers->find("BCC") != nullptr && !delay_ms;
  bool rewrite_reply_to = message->properties.reply_to == reply_to_queue;
  if (rewrite_reply_to && reply_name_.empty()) {
    return unexpected(error(ReplyCode::precondition_failed, "fast reply consumer does not exist"));
  }
  if (strip_bcc || rewrite_reply_to) {
    auto edited = std::make_shared<queue::Message>(*message);
    if (strip_bcc) {
      std::erase_if(edited->properties.headers->entries,
                    [](const amqp::FieldTableEntry& e) { return e.name == "BCC"; });
    }
    if (rewrite_reply_to) edited->properties.reply_to = reply_name_;
    message = std::move(edited);
  }
  if (method.exchange.empty() && method.routing_key.starts_with(reply_to_prefix)) {
    // A reply: straight to the requester's channel, no queue. Counts as routed even when the
    // requester is gone (reference §15).
    if (ConsumerSink* requester = connection_.broker().find_reply_consumer(method.routing_key)) {
      requester->deliver_reply(*message);
    }
    if (confirm_mode_) confirm(seq, true);
    return Ok{};
  }
  std::vector<QueuePtr> queues;
  if (delay_ms) {
    // Held in the exchange's delay queue until its time (durable with the exchange, and
    // confirmed as any queue confirms); routed then, so never returned now.
    queues.push_back(exchange->delay_queue);
  } else {
    const auto& properties = message->properties;
    queues = vhost().route(method.exchange, method.routing_key, extra_keys.value(),
                           properties.headers ? &*properties.headers : nullptr);
  }
  if (queues.empty() && method.mandatory) {
    connection_.send_content(number_,
                             amqp::BasicReturn{static_cast<uint16_t>(ReplyCode::no_route),
                                               "NO_ROUTE", method.exchange, method.routing_key},
                             message->properties, message->body);
  }
  // In-memory queues take a message as it is enqueued, durable ones once its entry is applied
  // (committed and fsynced); the confirm waits for every queue. A queue that refused it makes
  // the confirm a nack, whatever the others did (reference §5).
  uint64_t id = 0;  // 0: nothing waits for the queues' answers
  if (confirm_mode_ || tx_mode_) {
    id = next_publish_id_++;
    InFlightPublish& record = in_flight_publishes_[id];
    record.confirm_seq = seq;
    record.waiting = queues.size();
    record.in_transaction = tx_mode_;
    if (tx_mode_) ++tx_publishes_in_flight_;
    if (queues.empty()) publish_done(in_flight_publishes_.find(id));
  }
  Broker& broker = connection_.broker();
  for (const QueuePtr& queue : queues) {
    broker.execute(queue, broker.command(queue::EnqueueCommand{message, delay_ms}),
                   [handle = handle(), id](const QueuePtr&, const queue::CommandEffects* effects) {
                     Channel* channel = from(handle);
                     if (channel != nullptr && id != 0) channel->publish_answered(id, effects);
                   });
    const auto& machine = queue->machine;
    bool log_behind = queue->pending_commands.size() > queue_flow_pending_high ||
                      queue->pending_bytes > queue_flow_pending_bytes_high;
    if (log_behind || (machine.ready_count() > queue_flow_ready_high &&
                       machine.consumer_count() > 0 && !connection_.consumes_from(*queue))) {
      connection_.throttle(queue);
    }
  }
  return Ok{};
}

void Channel::publish_answered(uint64_t id, const queue::CommandEffects* effects) {
  auto it = in_flight_publishes_.find(id);
  if (it == in_flight_publishes_.end()) return;
  InFlightPublish& publish = it->second;
  if (effects == nullptr) {
    publish.failed = true;
  } else if (effects->enqueued == queue::EnqueueResult::rejected) {
    ++publish.refused;
  }
  if (--publish.waiting == 0) publish_done(it);
}

void Channel::publish_done(std::map<uint64_t, InFlightPublish>::iterator it) {
  // A message refused by a full queue (x-overflow reject-publish) was routed: it is nacked,
  // never returned, even when mandatory (as RabbitMQ; aio-pika raises DeliveryError on the nack).
  InFlightPublish& publish = it->second;
  if (publish.in_transaction && --tx_publishes_in_flight_ == 0 && tx_commit_waiting_) {
    tx_commit_waiting_ = false;
    connection_.send(number_, amqp::TxCommitOk{});
    reply_done();
  }
  release_confirms();
}

void Channel::release_confirms() {
  bool released = false;
  while (!in_flight_publishes_.empty() && in_flight_publishes_.begin()->second.waiting == 0) {
    const InFlightPublish& publish = in_flight_publishes_.begin()->second;
    if (publish.confirm_seq != 0) {
      pending_confirms_.emplace_back(publish.confirm_seq, !publish.failed && publish.refused == 0);
      released = true;
    }
    in_flight_publishes_.erase(in_flight_publishes_.begin());
  }
  if (released) connection_.wake();  // sent with the next flush
}

uint64_t Channel::queue_now() {
  return connection_.broker().wall_clock_ms();
}

void Channel::confirm(uint64_t seq, bool ack) {
  uint64_t id = next_publish_id_++;
  in_flight_publishes_[id] = InFlightPublish{.confirm_seq = seq, .failed = !ack};
  release_confirms();
}

void Channel::suspend_consumers() {
  suspend_consumers(true);
}

void Channel::resume_consumers() {
  suspend_consumers(false);
}

void Channel::suspend_consumers(bool suspend) {
  Broker& broker = connection_.broker();
  for (auto& [tag, consumer] : consumers_) {
    if (QueuePtr queue = consumer.queue.lock()) {
      broker.execute(queue, broker.command(queue::SuspendCommand{consumer.holder, suspend}));
    }
  }
}

bool Channel::consumes_from(const Queue& queue) const {
  for (const auto& [tag, consumer] : consumers_) {
    if (consumer.queue.lock().get() == &queue) return true;
  }
  return false;
}

void Channel::flush_confirms() {
  // As RabbitMQ: one multiple ack for the prefix of acks, then a frame each for the rest.
  // Confirms are earned in publish order here, so the prefix is everything before a nack.
  size_t prefix = 0;
  while (prefix < pending_confirms_.size() && pending_confirms_[prefix].second) ++prefix;
  if (prefix > 0) {
    connection_.send(number_, amqp::BasicAck{pending_confirms_[prefix - 1].first, prefix > 1});
  }
  for (size_t i = prefix; i < pending_confirms_.size(); ++i) {
    auto [seq, ack] = pending_confirms_[i];
    if (ack) {
      connection_.send(number_, amqp::BasicAck{seq, false});
    } else {
      connection_.send(number_, amqp::BasicNack{seq, false, false});
    }
  }
  pending_confirms_.clear();
}

Result<void, ProtocolError> Channel::confirm_select(const amqp::ConfirmSelect& m) {
  if (tx_mode_) {
    return unexpected(
        error(ReplyCode::precondition_failed, "cannot switch from tx to confirm mode"));
  }
  confirm_mode_ = true;
  if (!m.nowait) connection_.send(number_, amqp::ConfirmSelectOk{});
  return Ok{};
}

Result<void, ProtocolError> Channel::tx_select() {
  if (confirm_mode_) {
    return unexpected(
        error(ReplyCode::precondition_failed, "cannot switch from confirm to tx mode"));
  }
  tx_mode_ = true;
  connection_.send(number_, amqp::TxSelectOk{});
  return Ok{};
}

Result<void, ProtocolError> Channel::tx_commit() {
  if (!tx_mode_) {
    return unexpected(error(ReplyCode::precondition_failed, "channel is not transactional"));
  }
  auto pending = std::move(tx_pending_);
  tx_pending_.clear();
  for (auto& action : pending) {
    auto result = action();
    if (!result.ok()) return result;
  }
  if (tx_publishes_in_flight_ > 0) {
    // Durable queues take the messages once their entries are applied: commit-ok then.
    tx_commit_waiting_ = true;
    await_reply();
    return Ok{};
  }
  connection_.send(number_, amqp::TxCommitOk{});
  return Ok{};
}

Result<void, ProtocolError> Channel::tx_rollback() {
  if (!tx_mode_) {
    return unexpected(error(ReplyCode::precondition_failed, "channel is not transactional"));
  }
  tx_pending_.clear();
  connection_.send(number_, amqp::TxRollbackOk{});
  return Ok{};
}

// Closing ----------------------------------------------------------------------------------------

void Channel::release() {
  if (released_) return;
  released_ = true;
  tx_pending_.clear();
  if (!reply_name_.empty()) connection_.broker().unregister_reply_consumer(reply_name_);
  // Every (queue, holder) this channel has: its consumers and whatever it holds unacked.
  std::map<std::pair<Queue*, uint64_t>, QueuePtr> holders;
  for (auto& [tag, consumer] : consumers_) {
    connection_.broker().unregister_sink(consumer.holder);
    if (QueuePtr queue = consumer.queue.lock()) {
      holders[{queue.get(), consumer.holder.value}] = queue;
    }
  }
  for (auto& [tag, unacked] : unacked_) {
    if (QueuePtr queue = unacked.queue.lock()) {
      holders[{queue.get(), unacked.holder.value}] = queue;
    }
  }
  consumers_.clear();
  consumer_tags_.clear();
  unacked_.clear();
  connection_.replies_abandoned(awaiting_replies_);
  awaiting_replies_ = 0;
  *alive_ = nullptr;  // what finishes later finds no channel
  Broker& broker = connection_.broker();
  for (auto& [key, queue] : holders) {
    broker.execute(queue, broker.command(queue::DetachCommand{HolderId{key.second}}),
                   [&broker](const QueuePtr& detached, const queue::CommandEffects*) {
                     broker.queue_used(detached);
                     broker.delete_if_unused(detached);
                   });
  }
}

void Channel::await_reply() {
  ++awaiting_replies_;
  connection_.await_reply();
}

void Channel::reply_done() {
  --awaiting_replies_;
  connection_.reply_done();
}

}  // namespace hamq::broker
