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

class Connection;

// A message body is reserved up to this much when its header arrives, and grows with what
// arrives after it.
constexpr uint64_t body_reserved_up_front_bytes = 1 << 20;

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

  // Proposes a change of definitions (Broker::change_definitions); `reply` answers the method
  // once it is made, with the count it returns. A refused change fails the method, the channel
  // (or the connection) closed with the error as class_id.method_id's.
  using DefinitionReply = std::function<void(Channel&, uint64_t count)>;
  Result<void, ProtocolError> change_definitions(MetadataCommand command, uint16_t class_id,
                                                 uint16_t method_id, DefinitionReply reply);
  Result<void, ProtocolError> bind(const std::string& source, Binding binding, bool nowait,
                                   uint16_t class_id, uint16_t method_id, const amqp::Method& ok);
  Result<void, ProtocolError> unbind(const std::string& source, Binding binding, bool nowait,
                                     uint16_t class_id, uint16_t method_id, const amqp::Method& ok);
  // In a cluster, a look (a passive declare) that finds nothing here first waits until this node
  // has applied everything committed (a Barrier through the metadata log), then looks again:
  // what a declare-ok through another node said exists is then seen here too.
  Result<void, ProtocolError> after_barrier(
      uint16_t class_id, uint16_t method_id,
      std::function<Result<void, ProtocolError>(Channel&)> look);
  bool looking_after_barrier_ = false;
  // queue.delete's checks, run again once a queue used through another node's member answered.
  bool looking_after_relay_ = false;
  // queue.declare-ok for a queue that exists (it may wait for the queue's log).
  void queue_declared(const QueuePtr& queue, const std::string& name, bool passive, bool nowait);
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
  // The publish is done with `ack` as its confirm (no queue still to answer).
  void confirm(uint64_t seq, bool ack);
  // A queue answered publish `id` (null: it could not make the message durable).
  void publish_answered(uint64_t id, const queue::CommandEffects* effects);
  struct InFlightPublish;
  void publish_done(std::map<uint64_t, InFlightPublish>::iterator it);
  // Confirms leave in publish order: those of the publishes every queue has answered, up to
  // the first one still waiting.
  void release_confirms();
  void get_answered(const QueuePtr& queue, const queue::CommandEffects* effects, bool no_ack);
  // A handle for commands that finish after this call returns: empty once the channel is gone.
  std::weak_ptr<Channel*> handle() const { return alive_; }
  static Channel* from(const std::weak_ptr<Channel*>& handle) {
    auto alive = handle.lock();
    return alive ? *alive : nullptr;
  }
  Result<void, ProtocolError> settle_now(std::vector<uint64_t> tags, Settle how);
  // The queue a method names: "" means the last one declared on this channel.
  Result<std::string, ProtocolError> resolve_queue_name(const std::string& name) const;
  // `then` runs once the consumer is gone, and its queue if it was auto-delete and this its last
  // consumer.
  void cancel_consumer(const std::string& tag, std::function<void()> then = {});
  void reset_global_credit();
  void deliver_with_new_credit();
  void suspend_consumers(bool suspend);
  // A reply that waits for a durable queue's entry to be applied (basic.get, queue.purge,
  // basic.cancel, tx.commit): the connection handles no further frames until it is sent.
  void await_reply();
  void reply_done();
  size_t awaiting_replies_ = 0;
  VirtualHost& vhost();

  Connection& connection_;
  const uint16_t number_;
  bool released_ = false;
  std::shared_ptr<Channel*> alive_;

  // Publishing.
  std::optional<amqp::BasicPublish> publish_;
  std::optional<amqp::ContentHeader> header_;
  std::string body_;
  bool confirm_mode_ = false;
  uint64_t next_publish_seq_ = 1;
  std::vector<std::pair<uint64_t, bool>> pending_confirms_;  // (seq, ack?) not yet sent
  // A publish whose queues have not all taken it yet (a durable queue takes a message when its
  // entry is applied): its confirm and a transaction's commit wait.
  struct InFlightPublish {
    uint64_t confirm_seq = 0;  // 0: not in confirm mode
    size_t waiting = 0;        // queues yet to answer
    size_t refused = 0;        // by x-overflow reject-publish
    bool failed = false;       // a queue could not make it durable
    bool in_transaction = false;
  };
  uint64_t next_publish_id_ = 1;
  std::map<uint64_t, InFlightPublish> in_flight_publishes_;  // by id, in publish order
  bool tx_mode_ = false;
  std::vector<std::function<Result<void, ProtocolError>()>> tx_pending_;
  size_t tx_publishes_in_flight_ = 0;
  bool tx_commit_waiting_ = false;  // tx.commit-ok goes out when they are all answered

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
