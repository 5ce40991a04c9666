"""Where pika (Debian's 1.2.0) once saw hamq differ from RabbitMQ 3.10.8 (issue 13;
docs/compatibility.md): large messages, the channel limit, unknown exchange types."""

import os

import pika
import pika.exceptions
import pytest

from hamq_server import HamqServer
from pika_helpers import connect

MiB = 1024 * 1024
# ASan's allocator keeps what is freed (its quarantine), so the server's RSS is measured in the
# plain build only (tests/CMakeLists.txt sets HAMQ_SANITIZED for the sanitizer build).
MEMORY_MEASURED = os.environ.get("HAMQ_SANITIZED", "0") != "1"


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_100_mib_durable_message_goes_through_and_gives_its_memory_back(server):
    body = bytes(range(256)) * (100 * MiB // 256)
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("large", durable=True)
    channel.confirm_delivery()
    channel.basic_publish("", "large", body, pika.BasicProperties(delivery_mode=2))
    # Confirmed and waiting in a durable queue: the body is on disk, not in memory.
    if MEMORY_MEASURED:
        assert rss_bytes(server.process.pid) < 64 * MiB
    method, _, received = channel.basic_get("large")
    assert received == body
    channel.basic_ack(method.delivery_tag)
    channel.queue_declare("large", passive=True)  # the ack is handled
    # Delivered and acked: nothing of it is left, not even the buffer it was sent from, while
    # the connection that took it stays open.
    if MEMORY_MEASURED:
        assert rss_bytes(server.process.pid) < 64 * MiB
    connection.close()


def test_a_message_past_the_default_128_mib_is_refused(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("large", exclusive=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_publish("", "large", b"x" * (128 * MiB + 1))
        channel.queue_declare("large", passive=True)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        "PRECONDITION_FAILED - message size 134217729 is larger than configured max size "
        "134217728")
    connection.close()


def test_max_message_size_is_configurable():
    server = HamqServer("--max-message-size-bytes", "1000").start()
    try:
        connection = connect(server)
        channel = connection.channel()
        channel.queue_declare("small", exclusive=True)
        channel.basic_publish("", "small", b"x" * 1000)
        assert channel.basic_get("small", auto_ack=True)[2] == b"x" * 1000
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
            channel.basic_publish("", "small", b"x" * 1001)
            channel.queue_declare("small", passive=True)
        assert closed.value.reply_text == (
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000")
        connection.close()
    finally:
        assert server.stop() == 0


def test_channel_max_bounds_open_channels_not_their_numbers(server):
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, channel_max=3))
    for number in (100, 200, 300):
        connection.channel(number)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.channel(400)
    assert closed.value.reply_code == 530
    assert closed.value.reply_text == (
        "NOT_ALLOWED - number of channels opened (3) has reached the negotiated channel_max (3)")


def test_a_closed_channel_frees_its_place(server):
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, channel_max=2))
    first = connection.channel(7)
    connection.channel(9)
    first.close()
    connection.channel(65535).queue_declare("", exclusive=True)
    connection.close()


def test_unknown_exchange_type_closes_the_connection_as_rabbitmq_3(server):
    # pika's own acceptance tests expect RabbitMQ 3.x's answer (docs/compatibility.md).
    connection = connect(server)
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        channel.exchange_declare("odd", exchange_type="x-no-such-type")
    assert closed.value.reply_code == 503
    assert closed.value.reply_text == "COMMAND_INVALID - unknown exchange type 'x-no-such-type'"
    assert connection.is_closed

