"""The two retry-with-back-off patterns of docs/retry.md, end to end with pika: a dead-letter
queue with a TTL that sends failed messages back, and a delayed exchange with a growing x-delay.
"""

import time

import pika

from pika_helpers import connect, wait_until


def test_retry_through_a_dead_letter_queue_with_a_ttl(server):
    connection = connect(server)
    channel = connection.channel()
    # work --(reject)--> retry exchange --> "work.retry" (TTL 200 ms) --(expired)--> work again
    channel.exchange_declare("work", "direct")
    channel.exchange_declare("work.retry", "direct")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "work.retry"})
    channel.queue_bind("work", "work", "job")
    channel.queue_declare("work.retry", arguments={"x-message-ttl": 200,
                                                   "x-dead-letter-exchange": "work"})
    channel.queue_bind("work.retry", "work.retry", "job")
    channel.queue_declare("work.failed")
    attempts = []
    done = []

    def handle(ch, method, properties, body):
        deaths = (properties.headers or {}).get("x-death", [])
        retries = next((d["count"] for d in deaths
                        if d["queue"] == "work" and d["reason"] == "rejected"), 0)
        attempts.append((time.monotonic(), retries))
        if retries >= 5:  # give up: to the parking lot
            ch.basic_publish("", "work.failed", body, properties)
            ch.basic_ack(method.delivery_tag)
        elif retries < 2:  # the first two attempts fail
            ch.basic_reject(method.delivery_tag, requeue=False)
        else:
            done.append(body)
            ch.basic_ack(method.delivery_tag)

    channel.basic_consume("work", handle)
    channel.basic_publish("work", "job", b"flaky job")
    wait_until(connection, lambda: done == [b"flaky job"])
    assert [retries for _, retries in attempts] == [0, 1, 2]
    gaps = [later - earlier for (earlier, _), (later, _) in zip(attempts, attempts[1:])]
    assert all(gap >= 0.18 for gap in gaps), gaps  # each retry waited for the TTL
    assert channel.queue_declare("work.failed", passive=True).method.message_count == 0
    connection.close()


def test_retry_through_a_delayed_exchange_with_a_growing_delay(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("retry", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    channel.queue_declare("tasks")
    channel.queue_bind("tasks", "retry", "task")
    attempts = []
    done = []
    base_ms = 100

    def handle(ch, method, properties, body):
        attempt = (properties.headers or {}).get("x-attempt", 0)
        attempts.append(time.monotonic())
        if attempt < 3:  # fail, and try again after base * 2^attempt
            delay = base_ms * 2 ** attempt
            ch.basic_publish("retry", "task", body, pika.BasicProperties(
                headers={"x-attempt": attempt + 1, "x-delay": delay}))
            ch.basic_ack(method.delivery_tag)
        else:
            done.append(body)
            ch.basic_ack(method.delivery_tag)

    channel.basic_consume("tasks", handle)
    channel.basic_publish("", "tasks", b"task")
    wait_until(connection, lambda: done == [b"task"])
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    for gap, expected in zip(gaps, (0.1, 0.2, 0.4)):
        assert gap >= expected - 0.02, gaps  # the delay grew each time
    connection.close()
