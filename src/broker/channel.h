// Channel: one AMQP channel's state and the methods of the exchange, queue, basic, confirm and
// tx classes: content assembly of publishes, routing, consumers, delivery tags, acknowledgements,
// publisher confirms and transactions.
//
// A Channel belongs to a Connection, which routes its frames here and turns a returned
// ProtocolError into channel.close (soft) or connection.close (hard). Before it is destroyed the
// connection calls release(), which gives back everything the channel held.
//
// Thread: owned by the connection's event loop.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "amqp/errors.h"
#include "amqp/methods.gen.h"
#include "broker/broker.h"

namespace hamq::broker {

// The largest message body a publisher may send (RabbitMQ 4.x's default max_message_size).
constexpr uint64_t message_size_bytes_max = 16 * 1024 * 1024;

class Connection;

class Channel : public ConsumerSink {
 public:
  Channel(Connection& connection, uint16_t number);
  ~Channel() override;
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  uint16_t number() const { return number_; }
  // True between basic.publish and the last body frame of its content.
  bool expects_content() const { return publish_.has_value(); }

  Result<void, ProtocolError> handle_method(const amqp::Method& method);
  Result<void, ProtocolError> handle_content_header(std::span<const uint8_t> payload);
  Result<void, ProtocolError> handle_content_body(std::span<const uint8_t> payload);

  // Sends the publisher confirms earned since the last call, as few frames as possible.
  void flush_confirms();
  bool consumes_from(const Queue& queue) const;
  // The connection's output is backed up: no deliveries to this channel's consumers until
  // resume_consumers.
  void suspend_consumers();
  void resume_consumers();
  // The channel is going away: consumers are removed and unacknowledged messages go back to
  // their queues. Idempotent.
  void release();

  // ConsumerSink
  void deliver(const QueuePtr& queue, const queue::Delivery& delivery) override;
  void consumer_cancelled_by_broker(HolderId consumer) override;
  void deliver_reply(const queue::Message& message) override;

 private:
  // The properties a delivery goes out with: the message's, plus x-delivery-count on a
  // redelivery from a queue that counts them (valid until the next call).
  const amqp::BasicProperties& delivery_properties(const Queue& queue,
                                                   const queue::Delivery& delivery);
  amqp::BasicProperties redelivery_properties_;
  // The time queue commands carry: the broker's wall clock, which TTLs and delays count in.
  uint64_t queue_now();
  struct Consumer {
    std::string tag;
    std::weak_ptr<Queue> queue;
    HolderId holder;
    bool no_ack = false;
  };
  struct Unacked {
    std::weak_ptr<Queue> queue;
    HolderId holder;
    queue::MessageId id;
    bool counts_for_prefetch = false;  // a consumer's delivery, not a basic.get
  };
  enum class Settle { ack, requeue, discard };

  Result<void, ProtocolError> exchange_declare(const amqp::ExchangeDeclare& m);
  Result<void, ProtocolError> exchange_delete(const amqp::ExchangeDelete& m);
  Result<void, ProtocolError> exchange_bind(const amqp::ExchangeBind& m);
  Result<void, ProtocolError> exchange_unbind(const amqp::ExchangeUnbind& m);
  Result<void, ProtocolError> queue_declare(const amqp::QueueDeclare& m);
  Result<void, ProtocolError> queue_bind(const amqp::QueueBind& m);
  Result<void, ProtocolError> queue_unbind(const amqp::QueueUnbind& m);
  Result<void, ProtocolError> queue_purge(const amqp::QueuePurge& m);
  Result<void, ProtocolError> queue_delete(const amqp::QueueDelete& m);
  Result<void, ProtocolError> basic_qos(const amqp::BasicQos& m);
  Result<void, ProtocolError> basic_consume(const amqp::BasicConsume& m);
  Result<void, ProtocolError> consume_replies(const amqp::BasicConsume& m);
  Result<void, ProtocolError> basic_cancel(const amqp::BasicCancel& m);
  Result<void, ProtocolError> basic_publish(const amqp::BasicPublish& m);
  Result<void, ProtocolError> basic_get(const amqp::BasicGet& m);
  Result<void, ProtocolError> settle(uint64_t delivery_tag, bool multiple, Settle how);
  Result<void, ProtocolError> recover(bool requeue);
  Result<void, ProtocolError> confirm_select(const amqp::ConfirmSelect& m);
  Result<void, ProtocolError> tx_select();
  Result<void, ProtocolError> tx_commit();
  Result<void, ProtocolError> tx_rollback();

  // Routes and enqueues a complete message.
  Result<void, ProtocolError> publish(const amqp::BasicPublish& method, queue::MessagePtr message);
  void confirm(uint64_t seq, bool ack);
  Result<void, ProtocolError> settle_now(std::vector<uint64_t> tags, Settle how);
  // The queue a method names: "" means the last one declared on this channel.
  Result<std::string, ProtocolError> resolve_queue_name(const std::string& name) const;
  void cancel_consumer(const std::string& tag);
  void delete_if_unused(const QueuePtr& queue);
  void reset_global_credit();
  void deliver_with_new_credit();
  VirtualHost& vhost();

  Connection& connection_;
  const uint16_t number_;
  bool released_ = false;

  // Publishing.
  std::optional<amqp::BasicPublish> publish_;
  std::optional<amqp::ContentHeader> header_;
  std::string body_;
  bool confirm_mode_ = false;
  uint64_t next_publish_seq_ = 1;
  std::vector<std::pair<uint64_t, bool>> pending_confirms_;  // (seq, ack?) not yet sent
  bool tx_mode_ = false;
  std::vector<std::function<Result<void, ProtocolError>()>> tx_pending_;

  // Consuming.
  uint16_t prefetch_count_ = 0;  // per consumer, for consumers created after basic.qos
  // basic.qos(global=true): a limit shared by the channel's consumers (RabbitMQ 3.13 to 4.2's
  // reading of global). The queues take credit from global_credit_; settling gives it back.
  static constexpr uint32_t unlimited_credit = UINT32_MAX / 2;
  uint16_t global_prefetch_ = 0;
  uint32_t global_credit_ = unlimited_credit;
  uint32_t global_in_use_ = 0;
  std::unordered_map<std::string, Consumer> consumers_;      // by tag
  std::unordered_map<uint64_t, std::string> consumer_tags_;  // HolderId -> tag
  HolderId get_holder_;
  uint64_t next_delivery_tag_ = 1;
  std::map<uint64_t, Unacked> unacked_;  // by delivery tag
  std::string last_declared_queue_;
  // Direct reply-to: the consumer tag on amq.rabbitmq.reply-to and this channel's reply name.
  std::string reply_consumer_tag_;
  std::string reply_name_;
};

}  // namespace hamq::broker
