"""The connection handshake, heartbeats and shutdown, with pika (Debian's python3-pika)."""

import os
import signal
import socket
import time

import pika
import pika.exceptions
import pytest

from amqp_raw import PROTOCOL_HEADER, RawClient


def params(server, **kwargs):
    kwargs.setdefault("connection_attempts", 1)
    return pika.ConnectionParameters("127.0.0.1", server.port, **kwargs)


def test_connect_open_channels_and_close(server):
    connection = pika.BlockingConnection(params(server))
    channels = [connection.channel() for _ in range(20)]
    assert all(channel.is_open for channel in channels)
    for channel in channels[:10]:
        channel.close()
    assert all(channel.is_closed for channel in channels[:10])
    assert connection.is_open
    connection.close()
    assert connection.is_closed
    assert server.alive()


def test_server_properties_announce_capabilities():
    # pika keeps the server's properties; it refuses confirms without these capabilities.
    from hamq_server import HamqServer
    srv = HamqServer().start()
    try:
        connection = pika.BlockingConnection(params(srv))
        props = connection._impl.server_properties
        assert props["product"] == "hamq"
        caps = props["capabilities"]
        for name in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                     "exchange_exchange_bindings", "connection.blocked",
                     "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
                     "consumer_priorities"):
            assert caps[name] is True, name
        connection.close()
    finally:
        assert srv.stop() == 0


def test_wrong_password_is_refused(server):
    credentials = pika.PlainCredentials("guest", "not-the-password")
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as refused:
        pika.BlockingConnection(params(server, credentials=credentials))
    assert "ACCESS_REFUSED" in str(refused.value)
    assert server.alive()


def test_unknown_virtual_host_is_not_allowed(server):
    # pika reports a close during connection.open as a probable access denial, quoting the close.
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
        pika.BlockingConnection(params(server, virtual_host="nowhere"))
    assert "(530) 'NOT_ALLOWED - vhost nowhere not found'" in str(refused.value)


def test_wrong_protocol_header_gets_0_9_1_back(server):
    client = RawClient(server.port)
    client.send(b"AMQP\x00\x00\x0a\x00")
    assert client.recv_exactly(8) == PROTOCOL_HEADER
    assert client.closed_by_server()


def test_garbage_closes_only_its_own_connection(server):
    healthy = pika.BlockingConnection(params(server))
    healthy_channel = healthy.channel()
    for garbage in (b"GET / HTTP/1.1\r\n\r\n", os.urandom(3000), b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"):
        client = RawClient(server.port)
        client.send(garbage)
        assert client.closed_by_server()
        client.close()
    # A client that stops in the middle of a frame.
    client = RawClient(server.port)
    client.handshake()
    client.send(b"\x01\x00\x01\x00\x00\x00\x20\x00\x14")
    client.close()
    assert healthy_channel.is_open
    healthy.channel().close()
    healthy.close()
    assert server.alive()


def test_bad_frame_end_is_frame_error(server):
    client = RawClient(server.port)
    client.handshake()
    frame = bytearray(pika.frame.Method(1, pika.spec.Channel.Open()).marshal())
    frame[-1] = 0
    client.send(bytes(frame))
    _, close = client.read_method()
    assert isinstance(close, pika.spec.Connection.Close)
    assert close.reply_code == 501
    assert client.closed_by_server()


def test_method_on_unopened_channel_is_channel_error(server):
    client = RawClient(server.port)
    client.handshake()
    client.send_method(5, pika.spec.Basic.Qos(prefetch_count=10))
    channel, close = client.read_method()
    assert channel == 0
    assert isinstance(close, pika.spec.Connection.Close)
    assert close.reply_code == 504
    assert close.reply_text == "CHANNEL_ERROR - expected 'channel.open' on channel 5"
    client.send_method(0, pika.spec.Connection.CloseOk())
    assert client.closed_by_server()


def test_server_sends_heartbeats(server):
    # pika drops a connection that hears nothing for about two intervals.
    connection = pika.BlockingConnection(params(server, heartbeat=1))
    connection.sleep(4)
    assert connection.is_open
    connection.channel().close()
    connection.close()


def test_silent_client_is_dropped_after_missed_heartbeats(server):
    client = RawClient(server.port, timeout_s=10)
    client.handshake(heartbeat=1)
    started = time.monotonic()
    assert client.closed_by_server()
    # Two intervals of silence; the server's own heartbeats arrive in the meantime.
    assert time.monotonic() - started >= 1.5
    assert server.wait_for_log(r"missed heartbeats from client, timeout: 1s")


def test_sigterm_closes_clients_with_connection_forced():
    from hamq_server import HamqServer
    srv = HamqServer().start()
    connection = pika.BlockingConnection(params(srv))
    srv.process.send_signal(signal.SIGTERM)
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(time_limit=5)
    assert closed.value.reply_code == 320
    assert "CONNECTION_FORCED" in closed.value.reply_text
    assert srv.stop() == 0


def test_second_server_on_same_data_dir_is_refused(server):
    import subprocess
    from hamq_server import BIN_DIR
    result = subprocess.run(
        [str(BIN_DIR / "hamq-server"), "--port", "0", "--data-dir", server.data_dir.name],
        capture_output=True, text=True, timeout=10)
    assert result.returncode == 1
    assert "is in use by another hamq-server" in result.stdout + result.stderr


def test_help_lists_the_flags():
    import subprocess
    from hamq_server import BIN_DIR
    result = subprocess.run([str(BIN_DIR / "hamq-server"), "--help"], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0
    for flag in ("--port", "--data-dir", "--bind", "--heartbeat"):
        assert flag in result.stdout


def test_connection_limit_refuses_the_next_connection():
    from hamq_server import HamqServer
    srv = HamqServer("--connection-max", "1").start()
    try:
        first = pika.BlockingConnection(params(srv))
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as refused:
            pika.BlockingConnection(params(srv))
        assert "node connection limit (1) is reached" in str(refused.value)
        first.close()
        pika.BlockingConnection(params(srv)).close()  # room again
    finally:
        assert srv.stop() == 0
