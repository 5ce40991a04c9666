"""Poison messages as pika users meet them: x-delivery-limit, the x-delivery-count header on
redeliveries, dead-lettering with reason delivery_limit, and what hamq does instead of dropping
when there is no dead-letter exchange: the message waits in the vhost's parking queue."""


import pika

from pika_helpers import connect, wait_until


def reject_everything(connection, channel, queue, rounds):
    """Consumes `queue` and requeues every delivery; returns each delivery's x-delivery-count."""
    seen = []

    def on_message(ch, method, properties, body):
        headers = properties.headers or {}
        seen.append((method.redelivered, headers.get("x-delivery-count")))
        ch.basic_nack(method.delivery_tag, requeue=True)

    tag = channel.basic_consume(queue, on_message)
    wait_until(connection, lambda: len(seen) >= rounds)
    connection.process_data_events(time_limit=0.2)  # nothing more comes
    channel.basic_cancel(tag)
    return seen


def test_poison_message_without_dead_letter_exchange_is_parked_not_dropped(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("work", durable=True, arguments={"x-delivery-limit": 2})
    channel.basic_publish("", "work", b"poison", pika.BasicProperties(message_id="p-1"))
    seen = reject_everything(connection, channel, "work", 3)
    # First delivery, then two redeliveries counted; the third return is one too many.
    assert seen == [(False, None), (True, 1), (True, 2)]
    assert channel.queue_declare("work", passive=True).method.message_count == 0
    method, properties, body = channel.basic_get("hamq.parked", auto_ack=True)
    assert body == b"poison"
    assert properties.message_id == "p-1"
    death = properties.headers["x-death"][0]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == "work"
    # The operator replays it to where it came from.
    channel.basic_publish("", death["queue"], body, pika.BasicProperties(message_id="p-1"))
    method, properties, body = channel.basic_get("work", auto_ack=True)
    assert body == b"poison"
    connection.close()


def test_poison_message_goes_to_the_dead_letter_exchange_when_there_is_one(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("poison-dlx", "fanout")
    channel.queue_declare("poison-dlq")
    channel.queue_bind("poison-dlq", "poison-dlx")
    channel.queue_declare("jobs", arguments={"x-delivery-limit": 1,
                                             "x-dead-letter-exchange": "poison-dlx"})
    channel.basic_publish("", "jobs", b"bad job")
    reject_everything(connection, channel, "jobs", 2)
    method, properties, body = channel.basic_get("poison-dlq", auto_ack=True)
    assert body == b"bad job"
    assert properties.headers["x-death"][0]["reason"] == "delivery_limit"
    assert properties.headers["x-first-death-reason"] == "delivery_limit"
    # Nothing was parked: the dead-letter exchange took it.
    parked = channel.queue_declare("hamq.parked", durable=True).method.message_count
    assert parked == 0
    connection.close()


def test_quorum_queue_counts_deliveries_with_the_default_limit_of_20(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
    channel.basic_publish("", "qq", b"again and again")
    seen = reject_everything(connection, channel, "qq", 21)
    assert [count for _, count in seen] == [None] + list(range(1, 21))
    method, properties, body = channel.basic_get("hamq.parked", auto_ack=True)
    assert body == b"again and again"
    connection.close()


def test_classic_queue_without_a_limit_redelivers_without_the_header(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("plain")
    channel.basic_publish("", "plain", b"x")
    seen = reject_everything(connection, channel, "plain", 30)
    assert seen[:3] == [(False, None), (True, None), (True, None)]
    connection.close()
