"""The crash test of durable queues: publishers with confirms and consumers with manual acks run
against a real hamq-server, which is killed with SIGKILL at random moments and restarted. At the
end the queue is drained and three counts must be zero:

- lost: confirmed to a publisher, never delivered;
- unexpected: delivered, never published;
- duplicated without redelivered: delivered again without the redelivered flag (a duplicate is
  allowed only as a redelivery, after an ack the crash took with it).

Consumers reject one message in seven (requeue=false): those are dead-lettered into a second
durable queue, which its own consumer drains. Every confirmed message of that kind must arrive
there (dead-lettering is at-least-once: the message leaves its queue only once the dead-letter
queue has it), so a fourth count must be zero too:

- dead letters lost: confirmed, meant to be rejected, never delivered from the dead-letter queue.

The suite runs HAMQ_CRASH_KILLS kills (20 by default). The soak, documented in
docs/durable-queues.md, runs 200 or more:

    HAMQ_CRASH_KILLS=200 /usr/bin/python3 -m pytest -s tests/integration/test_durable_crash_pika.py
"""

import collections
import os
import random
import threading
import time

import pika
import pika.exceptions
import pytest

from hamq_server import HamqServer

QUEUE = "crash-test"
DEAD_LETTERS = "crash-test-dead-letters"
QUEUE_ARGUMENTS = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD_LETTERS}
PUBLISHERS = 2
CONSUMERS = 2
CLIENT_ERRORS = (pika.exceptions.AMQPError, OSError)


class Ledger:
    """What every client saw, under one lock."""

    def __init__(self):
        self.lock = threading.Lock()
        self.attempted = set()
        self.confirmed = set()
        self.nacked = 0
        self.deliveries = []  # (id, redelivered) in the order consumers saw them
        self.dead_letters = []  # ids delivered from the dead-letter queue

    def summary(self):
        with self.lock:
            seen = set()
            duplicated_without_redelivered = 0
            for message_id, redelivered in self.deliveries:
                if message_id in seen and not redelivered:
                    duplicated_without_redelivered += 1
                seen.add(message_id)
            dead = set(self.dead_letters)
            meant_dead = {m for m in self.confirmed if rejected(m)}
            return {
                "published": len(self.attempted),
                "confirmed": len(self.confirmed),
                "nacked": self.nacked,
                "deliveries": len(self.deliveries),
                "lost": len(self.confirmed - seen),
                "unexpected": len(seen - self.attempted),
                "duplicated_without_redelivered": duplicated_without_redelivered,
                "dead_letters": len(self.dead_letters),
                "dead_letters_lost": len(meant_dead - dead),
                "dead_letters_unexpected": len({m for m in dead if not rejected(m)} |
                                               (dead - self.attempted)),
                "dead_letters_twice": len(self.dead_letters) - len(dead),
            }


def rejected(message_id):
    """Whether consumers reject this message (one in seven), so that it is dead-lettered."""
    return int(message_id.rsplit("-", 1)[1]) % 7 == 3


def connect(server):
    if server.port is None:
        raise OSError("the broker is restarting")
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", server.port, connection_attempts=1, socket_timeout=2,
        blocked_connection_timeout=10))


def publisher(server, ledger, number, stop):
    sequence = 0
    while not stop.is_set():
        try:
            connection = connect(server)
            channel = connection.channel()
            declare(channel)
            channel.confirm_delivery()
            while not stop.is_set():
                message_id = "p%d-%d" % (number, sequence)
                sequence += 1
                with ledger.lock:
                    ledger.attempted.add(message_id)
                try:
                    channel.basic_publish("", QUEUE, message_id.encode(),
                                          pika.BasicProperties(delivery_mode=2), mandatory=True)
                except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                    with ledger.lock:
                        ledger.nacked += 1
                    continue
                with ledger.lock:
                    ledger.confirmed.add(message_id)
            connection.close()
        except CLIENT_ERRORS:
            time.sleep(0.05)  # the broker is down: try again


def declare(channel):
    channel.queue_declare(DEAD_LETTERS, durable=True)
    channel.queue_declare(QUEUE, durable=True, arguments=QUEUE_ARGUMENTS)


def consume(server, queue, on_message, stop):
    """Consumes from `queue` with manual acks until `stop`, reconnecting while the broker is down."""
    while not stop.is_set():
        try:
            connection = connect(server)
            channel = connection.channel()
            declare(channel)
            channel.basic_qos(prefetch_count=50)
            channel.basic_consume(queue, on_message)
            while not stop.is_set():
                connection.process_data_events(time_limit=0.05)
            connection.close()
        except CLIENT_ERRORS:
            time.sleep(0.05)


def consumer(server, ledger, stop):
    def on_message(ch, method, properties, body):
        message_id = body.decode()
        with ledger.lock:
            ledger.deliveries.append((message_id, method.redelivered))
        if rejected(message_id):
            ch.basic_reject(method.delivery_tag, requeue=False)
            return
        # Some acks go one by one, some many at a time.
        if random.random() < 0.7 or method.delivery_tag % 10 == 0:
            ch.basic_ack(method.delivery_tag, multiple=True)

    consume(server, QUEUE, on_message, stop)


def dead_letter_consumer(server, ledger, stop):
    def on_message(ch, method, properties, body):
        with ledger.lock:
            ledger.dead_letters.append(body.decode())
        ch.basic_ack(method.delivery_tag)

    consume(server, DEAD_LETTERS, on_message, stop)


def queue_state(server, queue=QUEUE):
    """(ready messages, consumers) of a queue."""
    connection = connect(server)
    try:
        method = connection.channel().queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count
    finally:
        connection.close()


def drained(server, ledger):
    summary = ledger.summary()
    return (queue_state(server)[0] == 0 and queue_state(server, DEAD_LETTERS)[0] == 0 and
            summary["lost"] == 0 and summary["dead_letters_lost"] == 0)


@pytest.fixture
def server():
    # Queues snapshot their state every 256 KB of log, so kills land around snapshots too; a
    # snapshot carries at most 64 KB of messages with their bodies and refers to the log for the
    # others, so the log keeps entries a snapshot covers.
    instance = HamqServer("--queue-snapshot-log-bytes", "262144",
                          "--queue-snapshot-carried-bytes", "65536").start()
    yield instance
    assert instance.stop() == 0, "hamq-server did not exit cleanly:\n" + "\n".join(instance.log)


def test_sigkill_at_random_moments_loses_nothing_confirmed(server):
    kills = int(os.environ.get("HAMQ_CRASH_KILLS", "20"))
    rng = random.Random(os.environ.get("HAMQ_CRASH_SEED"))
    ledger = Ledger()
    stop_publishing = threading.Event()
    stop_consuming = threading.Event()
    threads = [threading.Thread(target=publisher, args=(server, ledger, n, stop_publishing))
               for n in range(PUBLISHERS)]
    threads += [threading.Thread(target=consumer, args=(server, ledger, stop_consuming))
                for _ in range(CONSUMERS)]
    threads.append(threading.Thread(target=dead_letter_consumer,
                                    args=(server, ledger, stop_consuming)))
    for thread in threads:
        thread.start()
    try:
        for kill in range(kills):
            time.sleep(rng.uniform(0.05, 0.6))
            assert server.alive(), "hamq-server died by itself:\n" + "\n".join(server.log[-40:])
            server.kill()
            server.start()
        time.sleep(0.5)
        stop_publishing.set()
        # Drain: the consumers take what is left.
        deadline = time.monotonic() + 60
        while not drained(server, ledger):
            assert time.monotonic() < deadline, "the queues did not drain: %s, (ready, consumers) %s %s" % (
                ledger.summary(), queue_state(server), queue_state(server, DEAD_LETTERS))
            time.sleep(0.2)
        time.sleep(0.5)  # acks in flight land
    finally:
        stop_publishing.set()
        stop_consuming.set()
        for thread in threads:
            thread.join(30)
    summary = ledger.summary()
    print("crash test: %d kills, %s" % (kills, summary))
    assert summary["confirmed"] > kills, "too little got through to test anything: %s" % summary
    assert summary["lost"] == 0, summary
    assert summary["unexpected"] == 0, summary
    assert summary["duplicated_without_redelivered"] == 0, summary
    assert summary["dead_letters"] > 0, "nothing was dead-lettered: %s" % summary
    assert summary["dead_letters_lost"] == 0, summary
    assert summary["dead_letters_unexpected"] == 0, summary
    assert collections.Counter(d for d, _ in ledger.deliveries)  # something was consumed
