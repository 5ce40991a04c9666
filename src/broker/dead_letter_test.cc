#include "broker/dead_letter.h"

#include <gtest/gtest.h>

namespace hamq::broker {
namespace {

using queue::DeadLetterReason;

queue::Message original() {
  queue::Message m;
  m.exchange = "orders";
  m.routing_key = "new";
  m.body = "x";
  m.properties.expiration = "5000";
  return m;
}

const amqp::FieldTable& entry(const queue::Message& m, size_t index) {
  const auto& deaths = std::get<amqp::FieldArray>(m.properties.headers->find("x-death")->value);
  return std::get<amqp::FieldTable>(deaths.values.at(index).value);
}

size_t death_count(const queue::Message& m) {
  return std::get<amqp::FieldArray>(m.properties.headers->find("x-death")->value).values.size();
}

TEST(DeadLetter, FirstDeathBuildsTheEntryAndFirstAndLastHeaders) {
  auto route = make_dead_letter(original(), "q1", DeadLetterReason::expired, "dlx", std::nullopt,
                                1700000000);
  const queue::Message& m = *route.message;
  EXPECT_EQ(m.exchange, "dlx");
  EXPECT_EQ(route.routing_key, "new");
  EXPECT_FALSE(m.properties.expiration.has_value());
  const auto& e = entry(m, 0);
  EXPECT_EQ(*e.find("count"), amqp::FieldValue(int64_t{1}));
  EXPECT_EQ(*e.find("reason"), amqp::FieldValue("expired"));
  EXPECT_EQ(*e.find("queue"), amqp::FieldValue("q1"));
  EXPECT_EQ(*e.find("exchange"), amqp::FieldValue("orders"));
  EXPECT_EQ(*e.find("original-expiration"), amqp::FieldValue("5000"));
  EXPECT_EQ(*e.find("time"), amqp::FieldValue(amqp::Timestamp{1700000000}));
  EXPECT_EQ(e.entries.front().name, "original-expiration");  // RabbitMQ's order
  EXPECT_EQ(*m.properties.headers->find("x-first-death-reason"), amqp::FieldValue("expired"));
}

TEST(DeadLetter, RepeatOfTheSameQueueAndReasonCountsAndMovesToTheFront) {
  auto first =
      make_dead_letter(original(), "q1", DeadLetterReason::rejected, "dlx", std::nullopt, 1);
  auto second =
      make_dead_letter(*first.message, "q2", DeadLetterReason::rejected, "dlx", std::nullopt, 2);
  auto third =
      make_dead_letter(*second.message, "q1", DeadLetterReason::rejected, "dlx", std::nullopt, 3);
  const queue::Message& m = *third.message;
  ASSERT_EQ(death_count(m), 2u);
  EXPECT_EQ(*entry(m, 0).find("queue"), amqp::FieldValue("q1"));
  EXPECT_EQ(*entry(m, 0).find("count"), amqp::FieldValue(int64_t{2}));
  EXPECT_EQ(*entry(m, 0).find("time"), amqp::FieldValue(amqp::Timestamp{1}));  // the first time
  EXPECT_EQ(*m.properties.headers->find("x-first-death-queue"), amqp::FieldValue("q1"));
  EXPECT_EQ(*m.properties.headers->find("x-last-death-queue"), amqp::FieldValue("q1"));
}

TEST(DeadLetter, RoutingKeyReplacesTheKeysAndDropsCc) {
  queue::Message m = original();
  amqp::FieldArray cc;
  cc.values.emplace_back("audit");
  m.properties.headers.emplace().entries.emplace_back("CC", cc);
  auto kept = make_dead_letter(m, "q", DeadLetterReason::rejected, "dlx", std::nullopt, 0);
  EXPECT_EQ(kept.extra_keys, std::vector<std::string>{"audit"});
  auto replaced = make_dead_letter(m, "q", DeadLetterReason::rejected, "dlx", "parked", 0);
  EXPECT_EQ(replaced.routing_key, "parked");
  EXPECT_TRUE(replaced.extra_keys.empty());
  EXPECT_EQ(replaced.message->properties.headers->find("CC"), nullptr);
}

TEST(DeadLetter, CycleWithoutRejectionIsDetected) {
  auto expired =
      make_dead_letter(original(), "q1", DeadLetterReason::expired, "dlx", std::nullopt, 0);
  EXPECT_TRUE(dead_letter_cycle(*expired.message, "q1"));
  EXPECT_FALSE(dead_letter_cycle(*expired.message, "q2"));
  auto rejected =
      make_dead_letter(*expired.message, "q2", DeadLetterReason::rejected, "dlx", std::nullopt, 0);
  EXPECT_FALSE(dead_letter_cycle(*rejected.message, "q1"));  // a consumer broke the cycle
  EXPECT_FALSE(dead_letter_cycle(original(), "q1"));
}

}  // namespace
}  // namespace hamq::broker
