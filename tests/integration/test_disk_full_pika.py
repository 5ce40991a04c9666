"""A full disk costs no confirmed message: with the data directory on a small tmpfs, publishers
are blocked (connection.blocked) once free space falls below the limit, consumers keep draining,
and publishing resumes when space is freed; with no limit, a write that finds the disk full waits
(unconfirmed) until there is space. Needs root to mount the tmpfs (as the CI runs)."""

import os
import subprocess
import tempfile
import threading

import pika
import pytest

from hamq_server import HamqServer
from pika_helpers import wait_until

BODY = b"x" * 65536
MB = 1024 * 1024


@pytest.fixture
def small_disk():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    directory = tempfile.mkdtemp(prefix="hamq-small-disk-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", directory],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        os.rmdir(directory)
        pytest.skip("this machine does not let root mount a tmpfs: " + mounted.stderr.strip())
    ballast = os.path.join(directory, "ballast")
    with open(ballast, "wb") as f:
        f.write(b"\0" * (56 * MB))  # what an operator deletes to free space
    data = os.path.join(directory, "data")
    os.mkdir(data)
    try:
        yield data, ballast
    finally:
        subprocess.run(["umount", "-l", directory], check=False)
        os.rmdir(directory)


def publisher(server, blocked):
    """A connection and a channel in confirm mode on the durable queue "q"; connection.blocked
    and unblocked append True and False to `blocked`."""
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", server.port, connection_attempts=1))
    connection.add_on_connection_blocked_callback(lambda *_: blocked.append(True))
    connection.add_on_connection_unblocked_callback(lambda *_: blocked.append(False))
    channel = connection.channel()
    channel.queue_declare("q", durable=True)
    channel.confirm_delivery()
    return connection, channel


def consume_all(server, queue, expected):
    connection = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", server.port, connection_attempts=1))
    channel = connection.channel()
    got = []

    def on_message(ch, method, properties, body):
        got.append(body[-12:])
        ch.basic_ack(method.delivery_tag)

    channel.basic_qos(prefetch_count=20)
    channel.basic_consume(queue, on_message)
    wait_until(connection, lambda: len(got) >= expected, timeout_s=30)
    connection.close()
    return got


def tagged(i):
    return BODY + b"%012d" % i


def test_publishers_are_blocked_below_the_free_space_limit_and_resume_when_space_is_freed(
        small_disk):
    data, ballast = small_disk
    server = HamqServer("--disk-free-limit-bytes", str(32 * MB), data_dir=data).start()
    try:
        blocked = []
        connection, channel = publisher(server, blocked)
        confirmed = 0
        while not blocked:  # 72 MB free at first: the limit is reached within ~40 MB
            channel.basic_publish("", "q", tagged(confirmed))
            confirmed += 1
            assert confirmed < 2000, "never blocked"
            connection.process_data_events(time_limit=0)
        assert server.wait_for_log(r"disk alarm: .* publishers are blocked")
        # Consumers go on while publishers wait: every confirmed message comes out.
        got = consume_all(server, "q", confirmed)
        assert got == [b"%012d" % i for i in range(confirmed)]
        os.remove(ballast)
        wait_until(connection, lambda: blocked[-1] is False, timeout_s=10)
        assert server.wait_for_log(r"disk alarm cleared")
        for i in range(confirmed, confirmed + 20):
            channel.basic_publish("", "q", tagged(i))
        connection.close()
        assert consume_all(server, "q", 20) == [b"%012d" % i for i in range(confirmed,
                                                                             confirmed + 20)]
    finally:
        assert server.stop() == 0, "\n".join(server.log)


def test_a_write_that_finds_the_disk_full_waits_for_space_and_loses_nothing(small_disk):
    data, ballast = small_disk
    server = HamqServer("--disk-free-limit-bytes", "0", data_dir=data).start()
    confirmed = []
    failures = []

    def publish():
        try:
            connection, channel = publisher(server, [])
            for i in range(1400):  # 90 MB: more than the 72 MB free
                channel.basic_publish("", "q", tagged(i))
                confirmed.append(i)
            connection.close()
        except Exception as error:  # reported by the test below
            failures.append(error)

    try:
        thread = threading.Thread(target=publish)
        thread.start()
        assert server.wait_for_log(r"the disk is full", timeout_s=60), (failures, server.log)
        # The publisher waits: what it sent past the free space cannot have been confirmed (the
        # restart below shows every confirmed message was written).
        assert len(confirmed) < 1400
        os.remove(ballast)
        thread.join(60)
        assert not failures, failures
        assert confirmed == list(range(1400))
        server.kill()
        server.start()
        got = consume_all(server, "q", 1400)
        assert got == [b"%012d" % i for i in range(1400)]
    finally:
        assert server.stop() == 0, "\n".join(server.log)
