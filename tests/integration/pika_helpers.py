"""What the pika tests share: a connection to the test server, and waiting for a condition while
pika processes events (never a fixed sleep: the suite runs tests in parallel)."""

import time

import pika
import pika.exceptions


def connect(server):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, connection_attempts=1))


def wait_until(connection, condition, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        connection.process_data_events(time_limit=0.02)


def exists(connection, kind, name):
    """Whether the queue or exchange `name` exists, asked with a passive declare (which does not
    renew an x-expires lease)."""
    channel = connection.channel()
    try:
        if kind == "queue":
            channel.queue_declare(name, passive=True)
        else:
            channel.exchange_declare(name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as closed:
        assert closed.reply_code == 404
        return False
    channel.close()
    return True
