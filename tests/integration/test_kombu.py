"""kombu (Debian's python3-kombu on py-amqp, the transport Celery uses) against hamq."""

import kombu
import pytest


@pytest.fixture
def connection(server):
    with kombu.Connection(f"amqp://guest:guest@127.0.0.1:{server.port}//",
                          connect_timeout=5) as conn:
        yield conn


def test_simple_queue_put_and_get(connection):
    queue = connection.SimpleQueue("kombu-simple")
    for i in range(10):
        queue.put({"n": i})
    got = []
    for _ in range(10):
        message = queue.get(timeout=5)
        got.append(message.payload["n"])
        message.ack()
    assert got == list(range(10))
    assert queue.qsize() == 0
    queue.close()


def test_producer_and_consumer_through_a_topic_exchange(connection):
    exchange = kombu.Exchange("kombu-events", type="topic")
    queue = kombu.Queue("kombu-orders", exchange, routing_key="orders.*")
    producer = kombu.Producer(connection.channel(), exchange=exchange)
    producer.publish({"id": 1}, routing_key="orders.created", declare=[queue])
    producer.publish({"id": 2}, routing_key="payments.created")
    producer.publish({"id": 3}, routing_key="orders.paid")
    received = []

    def on_message(body, message):
        received.append(body["id"])
        message.ack()

    with kombu.Consumer(connection.channel(), queues=[queue], callbacks=[on_message]):
        while len(received) < 2:
            connection.drain_events(timeout=5)
    assert received == [1, 3]
