#include "broker/virtual_host.h"

#include <gtest/gtest.h>

namespace hamq::broker {
namespace {

using amqp::ReplyCode;

QueueDeclare declare(std::string name, bool durable = false, bool exclusive = false,
                     amqp::FieldTable arguments = {}) {
  QueueDeclare d;
  d.name = std::move(name);
  d.durable = durable;
  d.exclusive = exclusive;
  d.arguments = std::move(arguments);
  return d;
}

ExchangeDeclare exchange_declare(std::string name, std::string type, bool durable = false,
                                 bool auto_delete = false, amqp::FieldTable arguments = {}) {
  ExchangeDeclare d;
  d.name = std::move(name);
  d.type = std::move(type);
  d.durable = durable;
  d.auto_delete = auto_delete;
  d.arguments = std::move(arguments);
  return d;
}

std::vector<std::string> names(const std::vector<QueuePtr>& queues) {
  std::vector<std::string> out;
  for (const auto& q : queues) out.push_back(q->name);
  return out;
}

class VirtualHostTest : public ::testing::Test {
 protected:
  void queue(const std::string& name) { ASSERT_TRUE(vhost.declare_queue(declare(name), 1).ok()); }
  void exchange(const std::string& name, const std::string& type, amqp::FieldTable arguments = {}) {
    ASSERT_TRUE(vhost.declare_exchange(exchange_declare(name, type, false, false, arguments)).ok());
  }
  void bind(const std::string& source, const std::string& queue, const std::string& key) {
    ASSERT_TRUE(vhost.bind(source, {queue, true, key, {}}, 1).ok());
  }
  std::vector<std::string> route(const std::string& exchange, const std::string& key) {
    return names(vhost.route(exchange, key, {}, nullptr));
  }

  VirtualHost vhost{"/"};
};

TEST_F(VirtualHostTest, PredeclaredExchangesExist) {
  for (const char* name :
       {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"}) {
    ASSERT_NE(vhost.find_exchange(name), nullptr) << name;
    EXPECT_TRUE(vhost.find_exchange(name)->durable);
  }
  EXPECT_TRUE(vhost.find_exchange("amq.rabbitmq.trace")->internal);
}

TEST_F(VirtualHostTest, DefaultExchangeRoutesByQueueName) {
  queue("a");
  EXPECT_EQ(route("", "a"), std::vector<std::string>{"a"});
  EXPECT_TRUE(route("", "b").empty());
}

TEST_F(VirtualHostTest, QueueReachedTwiceGetsOneCopy) {
  queue("q");
  exchange("t", "topic");
  bind("t", "q", "a.*");
  bind("t", "q", "#");
  EXPECT_EQ(route("t", "a.b"), std::vector<std::string>{"q"});
}

TEST_F(VirtualHostTest, ExchangeCyclesTerminate) {
  queue("q");
  exchange("x", "fanout");
  exchange("y", "fanout");
  ASSERT_TRUE(vhost.bind("x", {"y", false, "", {}}, 1).ok());
  ASSERT_TRUE(vhost.bind("y", {"x", false, "", {}}, 1).ok());
  bind("y", "q", "");
  EXPECT_EQ(route("x", "k"), std::vector<std::string>{"q"});
}

TEST_F(VirtualHostTest, AlternateExchangeTakesUnroutedMessagesOnly) {
  queue("routed");
  queue("stray");
  exchange("ae", "fanout");
  bind("ae", "stray", "");
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("alternate-exchange", "ae");
  exchange("main", "direct", arguments);
  bind("main", "routed", "k");
  EXPECT_EQ(route("main", "k"), std::vector<std::string>{"routed"});
  EXPECT_EQ(route("main", "other"), std::vector<std::string>{"stray"});
}

TEST_F(VirtualHostTest, RedeclareWithOtherDurabilityIsInequivalent) {
  queue("hello");
  auto again = vhost.declare_queue(declare("hello", true), 1);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, ReplyCode::precondition_failed);
  EXPECT_EQ(again.error().reply_text(),
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'hello' in vhost '/': "
            "received 'true' but current is 'false'");
}

TEST_F(VirtualHostTest, RedeclareComparesKnownArgumentsAcrossIntegerWidths) {
  amqp::FieldTable ttl;
  ttl.entries.emplace_back("x-message-ttl", int32_t{1000});
  ASSERT_TRUE(vhost.declare_queue(declare("q", false, false, ttl), 1).ok());
  amqp::FieldTable same;
  same.entries.emplace_back("x-message-ttl", int64_t{1000});
  same.entries.emplace_back("x-unknown", "ignored");
  EXPECT_TRUE(vhost.declare_queue(declare("q", false, false, same), 1).ok());
  auto different = vhost.declare_queue(declare("q"), 1);
  ASSERT_FALSE(different.ok());
  EXPECT_EQ(different.error().reply_text(),
            "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': "
            "received none but current is the value '1000' of type 'signedint'");
}

TEST_F(VirtualHostTest, ExclusiveQueueIsLockedToItsOwner) {
  ASSERT_TRUE(vhost.declare_queue(declare("mine", false, true), 7).ok());
  EXPECT_TRUE(vhost.use_queue("mine", 7).ok());
  auto other = vhost.use_queue("mine", 8);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().code, ReplyCode::resource_locked);
  EXPECT_EQ(vhost.queues_owned_by(7), std::vector<std::string>{"mine"});
}

TEST_F(VirtualHostTest, ExchangeRedeclareMustMatchType) {
  exchange("logs", "fanout");
  auto again = vhost.declare_exchange(exchange_declare("logs", "direct"));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().reply_text(),
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'logs' in vhost '/': "
            "received 'direct' but current is 'fanout'");
}

TEST_F(VirtualHostTest, DefaultAndSystemExchangesAreProtected) {
  EXPECT_EQ(vhost.declare_exchange(exchange_declare("", "direct")).error().code,
            ReplyCode::access_refused);
  EXPECT_EQ(vhost.declare_exchange(exchange_declare("amq.new", "direct")).error().code,
            ReplyCode::access_refused);
  EXPECT_TRUE(vhost.declare_exchange(exchange_declare("amq.direct", "direct", true)).ok());
  EXPECT_EQ(vhost.delete_exchange("amq.direct", false).error().code, ReplyCode::access_refused);
  queue("q");
  EXPECT_EQ(vhost.bind("", {"q", true, "q", {}}, 1).error().code, ReplyCode::access_refused);
}

TEST_F(VirtualHostTest, AutoDeleteExchangeGoesWithItsLastBinding) {
  ASSERT_TRUE(vhost.declare_exchange(exchange_declare("temp", "direct", false, true)).ok());
  queue("q");
  bind("temp", "q", "k");
  ASSERT_TRUE(vhost.unbind("temp", {"q", true, "k", {}}, 1).ok());
  EXPECT_EQ(vhost.find_exchange("temp"), nullptr);
}

TEST_F(VirtualHostTest, DeletingAQueueRemovesItsBindings) {
  queue("q");
  bind("amq.fanout", "q", "");
  vhost.remove_queue("q");
  queue("q");
  EXPECT_TRUE(route("amq.fanout", "").empty());
}

TEST_F(VirtualHostTest, HeadersBindingWithBadXMatchIsRefused) {
  queue("q");
  amqp::FieldTable arguments;
  arguments.entries.emplace_back("x-match", "most");
  auto bound = vhost.bind("amq.headers", {"q", true, "", arguments}, 1);
  ASSERT_FALSE(bound.ok());
  EXPECT_EQ(bound.error().code, ReplyCode::precondition_failed);
}

}  // namespace
}  // namespace hamq::broker
