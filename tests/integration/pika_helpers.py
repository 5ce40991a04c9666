"""What the pika tests share: a connection to the test server, and waiting for a condition while
pika processes events (never a fixed sleep: the suite runs tests in parallel)."""

import time

import pika


def connect(server):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, connection_attempts=1))


def wait_until(connection, condition, timeout_s=15):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        connection.process_data_events(time_limit=0.02)
