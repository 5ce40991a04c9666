#include "broker/queue_arguments.h"

#include <gtest/gtest.h>

namespace hamq::broker {
namespace {

std::string refusal(amqp::FieldTable arguments, QueueProperties queue = {"q", "/", true}) {
  auto result = validate_queue_arguments(arguments, queue);
  if (result.ok()) return "";
  EXPECT_EQ(result.error().code, amqp::ReplyCode::precondition_failed);
  return result.error().reply_text();
}

amqp::FieldTable one(std::string name, amqp::FieldValue value) {
  amqp::FieldTable t;
  t.entries.emplace_back(std::move(name), std::move(value));
  return t;
}

TEST(QueueArguments, IntegersOfAnyWidthAreAccepted) {
  EXPECT_EQ(refusal(one("x-message-ttl", int16_t{1000})), "");
  EXPECT_EQ(refusal(one("x-message-ttl", int64_t{1000})), "");
  EXPECT_EQ(refusal(one("x-max-length", uint8_t{0})), "");
}

TEST(QueueArguments, WrongTypesAndRangesAreRefusedWithRabbitMqsReasons) {
  EXPECT_EQ(refusal(one("x-message-ttl", "1000")),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': "
            "{unacceptable_type,longstr}");
  EXPECT_EQ(refusal(one("x-message-ttl", int32_t{-5})),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': "
            "{value_negative,-5}");
  EXPECT_EQ(refusal(one("x-expires", int32_t{0})),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': "
            "{value_zero,0}");
  EXPECT_NE(refusal(one("x-max-priority", int32_t{256})), "");
  EXPECT_NE(refusal(one("x-overflow", "drop-tail")), "");
  EXPECT_NE(refusal(one("x-single-active-consumer", int32_t{1})), "");
  EXPECT_NE(refusal(one("x-queue-type", "stream")), "");
  EXPECT_NE(refusal(one("x-max-length", 1.5)), "");
}

TEST(QueueArguments, ADeduplicationWindowIsAPositiveDurationOrCount) {
  EXPECT_EQ(refusal(one("x-message-deduplication", int32_t{60000})), "");
  EXPECT_EQ(refusal(one("x-message-deduplication-messages", int32_t{1000})), "");
  EXPECT_EQ(refusal(one("x-message-deduplication", int32_t{0})),
            "PRECONDITION_FAILED - invalid arg 'x-message-deduplication' for queue 'q' in vhost "
            "'/': {value_zero,0}");
  EXPECT_NE(refusal(one("x-message-deduplication", true)), "");
  EXPECT_NE(refusal(one("x-message-deduplication-messages", int64_t{-1})), "");
  EXPECT_NE(refusal(one("x-message-deduplication-messages", int64_t{20'000'000})), "");
}

TEST(QueueArguments, DeadLetterRoutingKeyNeedsAnExchange) {
  EXPECT_EQ(refusal(one("x-dead-letter-routing-key", "k")),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in "
            "vhost '/': routing_key_but_no_dlx_defined");
  auto both = one("x-dead-letter-routing-key", "k");
  both.entries.emplace_back("x-dead-letter-exchange", "dlx");
  EXPECT_EQ(refusal(both), "");
}

TEST(QueueArguments, UnknownArgumentsAreAccepted) {
  EXPECT_EQ(refusal(one("x-custom", amqp::FieldTable{})), "");
  EXPECT_EQ(refusal(one("no-prefix", 1)), "");
}

TEST(QueueArguments, QuorumQueuesMustBeDurableSharedAndLasting) {
  auto quorum = one("x-queue-type", "quorum");
  EXPECT_EQ(refusal(quorum, {"q", "/", false}),
            "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'");
  EXPECT_EQ(refusal(quorum, {"q", "/", true, true}),
            "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'q' in vhost '/'");
  EXPECT_EQ(refusal(quorum, {"q", "/", true, false, true}),
            "PRECONDITION_FAILED - invalid property 'auto-delete' for queue 'q' in vhost '/'");
  EXPECT_EQ(refusal(quorum, {"q", "/", true}), "");
}

}  // namespace
}  // namespace hamq::broker
