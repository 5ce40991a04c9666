"""Queue, exchange and basic-class behaviour as pika users meet it."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pika
import pika.exceptions
import pytest

from amqp_raw import RawClient


def connect(server):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, connection_attempts=1))


def wait_for(connection, condition, timeout_s=10):
    """Processes the connection's events until condition() holds (fails after timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        connection.process_data_events(time_limit=0.01)


def get_all(channel, queue):
    """Every ready message of the queue, with basic.get and auto-ack: [(body, redelivered)]."""
    out = []
    while True:
        method, _, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body, method.redelivered))


def test_publisher_confirms_ack_every_publish(server):
    connection = connect(server)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("confirmed")
    for i in range(100):
        channel.basic_publish("", "confirmed", b"%d" % i)  # raises unless acked
    assert channel.queue_declare("confirmed", passive=True).method.message_count == 100
    connection.close()


def test_mandatory_unroutable_is_returned_before_its_confirm(server):
    connection = connect(server)
    channel = connection.channel()
    channel.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        channel.basic_publish("", "no-such-queue", b"lost?", mandatory=True)
    channel.basic_publish("", "no-such-queue", b"dropped quietly")  # not mandatory: acked
    connection.close()


def test_consumer_is_cancelled_when_its_queue_is_deleted(server):
    connection = connect(server)
    consumer_channel = connection.channel()
    consumer_channel.queue_declare("doomed")
    cancelled = []
    consumer_channel.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    consumer_channel.basic_consume("doomed", lambda *args: None)
    other = connect(server)
    other.channel().queue_delete("doomed")
    wait_for(connection, lambda: cancelled)
    assert len(cancelled) == 1
    assert isinstance(cancelled[0].method, pika.spec.Basic.Cancel)
    other.close()
    connection.close()


CONSUMER_THAT_DIES = textwrap.dedent("""
    import os, sys, pika
    port, count = int(sys.argv[1]), int(sys.argv[2])
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=count)
    got = 0
    for method, _, body in channel.consume("work", inactivity_timeout=5):
        got += 1
        if got == count:
            print("holding", count, flush=True)
            os.kill(os.getpid(), 9)
""")


def test_unacked_messages_of_a_killed_consumer_are_redelivered_in_order(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("work")
    for i in range(8):
        channel.basic_publish("", "work", b"job %d" % i)
    consumer = subprocess.run([sys.executable, "-c", CONSUMER_THAT_DIES, str(server.port), "5"],
                              capture_output=True, text=True, timeout=30)
    assert consumer.returncode == -signal.SIGKILL, consumer.stderr
    assert "holding 5" in consumer.stdout
    # The server notices the dead socket and puts the five back ahead of the rest.
    for _ in range(50):
        if channel.queue_declare("work", passive=True).method.message_count == 8:
            break
        connection.sleep(0.1)
    got = get_all(channel, "work")
    assert [body for body, _ in got] == [b"job %d" % i for i in range(8)]
    assert [redelivered for _, redelivered in got] == [True] * 5 + [False] * 3
    connection.close()


def test_nack_requeue_returns_to_original_position_and_reject_drops(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("nacks")
    for i in range(4):
        channel.basic_publish("", "nacks", b"%d" % i)
    tags = [channel.basic_get("nacks")[0].delivery_tag for _ in range(3)]
    channel.basic_reject(tags[0], requeue=False)
    channel.basic_nack(tags[2], multiple=True, requeue=True)  # 1 and 2 go back
    assert get_all(channel, "nacks") == [(b"1", True), (b"2", True), (b"3", False)]
    connection.close()


def test_double_ack_closes_the_channel_with_406_and_the_connection_lives(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("acks")
    channel.basic_publish("", "acks", b"x")
    method, _, _ = channel.basic_get("acks")
    channel.basic_ack(method.delivery_tag)
    channel.basic_ack(method.delivery_tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare("acks", passive=True)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == "PRECONDITION_FAILED - unknown delivery tag 1"
    assert connection.channel().queue_declare("acks", passive=True).method.message_count == 0
    connection.close()


def test_exclusive_queue_is_locked_to_its_connection_and_deleted_with_it(server):
    owner = connect(server)
    owner.channel().queue_declare("mine", exclusive=True)
    other = connect(server)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as locked:
        other.channel().queue_declare("mine", passive=True)
    assert locked.value.reply_code == 405
    owner.close()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        other.channel().queue_declare("mine", passive=True)
    assert gone.value.reply_code == 404
    assert gone.value.reply_text == "NOT_FOUND - no queue 'mine' in vhost '/'"
    other.close()


def test_auto_delete_queue_goes_with_its_last_consumer(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("temporary", auto_delete=True)
    first = channel.basic_consume("temporary", lambda *args: None)
    second = channel.basic_consume("temporary", lambda *args: None)
    channel.basic_cancel(first)
    assert channel.queue_declare("temporary", passive=True).method.consumer_count == 1
    channel.basic_cancel(second)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        channel.queue_declare("temporary", passive=True)
    assert gone.value.reply_code == 404
    connection.close()


def test_transactions_publish_and_ack_at_commit_only(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("tx")
    channel.tx_select()
    channel.basic_publish("", "tx", b"kept")
    probe = connection.channel()
    assert probe.queue_declare("tx", passive=True).method.message_count == 0
    channel.tx_commit()
    assert probe.queue_declare("tx", passive=True).method.message_count == 1
    channel.basic_publish("", "tx", b"rolled back")
    channel.tx_rollback()
    assert get_all(probe, "tx") == [(b"kept", False)]
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.confirm_delivery()
    assert refused.value.reply_code == 406
    connection.close()


def test_headers_exchange_to_exchange_bindings_and_alternate_exchange(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("unrouted", "fanout")
    channel.queue_declare("lost-and-found")
    channel.queue_bind("lost-and-found", "unrouted")
    channel.exchange_declare("front", "direct", arguments={"alternate-exchange": "unrouted"})
    channel.exchange_declare("by-headers", "headers")
    channel.exchange_bind(destination="by-headers", source="front", routing_key="h")
    channel.queue_declare("pdf-reports")
    channel.queue_bind("pdf-reports", "by-headers",
                       arguments={"x-match": "all", "format": "pdf", "type": "report"})
    report = pika.BasicProperties(headers={"format": "pdf", "type": "report"})
    log = pika.BasicProperties(headers={"format": "pdf", "type": "log"})
    channel.basic_publish("front", "h", b"report", properties=report)
    channel.basic_publish("front", "h", b"log", properties=log)
    channel.basic_publish("front", "elsewhere", b"stray")
    assert get_all(channel, "pdf-reports") == [(b"report", False)]
    assert get_all(channel, "lost-and-found") == [(b"log", False), (b"stray", False)]
    connection.close()


def test_cc_and_bcc_add_routing_keys_and_bcc_is_hidden(server):
    connection = connect(server)
    channel = connection.channel()
    for name in ("to", "cc", "bcc"):
        channel.queue_declare(name)
    props = pika.BasicProperties(headers={"CC": ["cc"], "BCC": ["bcc"]})
    channel.basic_publish("", "to", b"memo", properties=props)
    for name in ("to", "cc", "bcc"):
        method, properties, body = channel.basic_get(name, auto_ack=True)
        assert body == b"memo"
        assert properties.headers == {"CC": ["cc"]}
    connection.close()


def test_properties_and_large_bodies_arrive_intact(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("props")
    body = os.urandom(1_000_000)  # many body frames
    props = pika.BasicProperties(
        content_type="application/octet-stream", content_encoding="identity",
        headers={"int": 7, "str": "text", "nested": {"list": [1, "two"]}, "flag": True},
        delivery_mode=2, priority=5, correlation_id="c-1", reply_to="answers",
        expiration="60000", message_id="m-1", timestamp=1700000000, type="blob",
        user_id="guest", app_id="tests")
    channel.basic_publish("", "props", body, properties=props)
    method, received, got = channel.basic_get("props", auto_ack=True)
    assert got == body
    for name in ("content_type", "content_encoding", "headers", "delivery_mode", "priority",
                 "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
                 "user_id", "app_id"):
        assert getattr(received, name) == getattr(props, name), name
    connection.close()


@pytest.mark.parametrize("action, code", [
    (lambda ch: ch.basic_publish("missing-exchange", "k", b"x"), 404),
    (lambda ch: ch.queue_declare("amq.mine"), 403),
    (lambda ch: ch.exchange_declare("amq.mine", "direct"), 403),
    (lambda ch: ch.queue_bind("nowhere", "amq.direct"), 404),
    (lambda ch: ch.basic_publish("", "q", b"x", properties=pika.BasicProperties(user_id="eve")),
     406),
    (lambda ch: ch.queue_declare("ttl", arguments={"x-message-ttl": "soon"}), 406),
    (lambda ch: ch.queue_declare("qq", arguments={"x-queue-type": "quorum"}), 406),
])
def test_channel_errors_close_only_the_channel(server, action, code):
    connection = connect(server)
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        action(channel)
        channel.queue_declare("probe")  # synchronous: the close arrives by now
    assert closed.value.reply_code == code
    assert connection.is_open
    connection.channel().close()
    connection.close()


def test_consumer_tag_reuse_is_a_connection_error(server):
    # pika refuses a duplicate tag itself, so this client speaks raw frames.
    client = RawClient(server.port)
    client.handshake()
    client.send_method(1, pika.spec.Channel.Open())
    client.read_method()
    client.send_method(1, pika.spec.Queue.Declare(queue="tags"))
    client.read_method()
    for _ in range(2):
        client.send_method(1, pika.spec.Basic.Consume(queue="tags", consumer_tag="same"))
    _, consume_ok = client.read_method()
    assert isinstance(consume_ok, pika.spec.Basic.ConsumeOk)
    channel, close = client.read_method()
    assert channel == 0
    assert close.reply_code == 530
    assert close.reply_text == "NOT_ALLOWED - attempt to reuse consumer tag 'same'"


def test_exclusive_consumer_refuses_others(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("solo")
    channel.basic_consume("solo", lambda *args: None, exclusive=True)
    other = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        other.basic_consume("solo", lambda *args: None)
    assert refused.value.reply_code == 403
    connection.close()


def test_queue_delete_if_unused_and_if_empty(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("guarded")
    channel.basic_publish("", "guarded", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_delete("guarded", if_empty=True)
    assert refused.value.reply_code == 406
    channel = connection.channel()
    assert channel.queue_delete("guarded").method.message_count == 1
    assert channel.queue_delete("guarded").method.message_count == 0  # idempotent
    connection.close()


def test_content_without_a_method_is_unexpected_frame(server):
    client = RawClient(server.port)
    client.handshake()
    client.send_method(1, pika.spec.Channel.Open())
    client.read_method()
    client.send(pika.frame.Header(1, 3, pika.spec.BasicProperties()).marshal())
    _, close = client.read_method()
    assert close.reply_code == 505


def test_body_longer_than_its_header_is_frame_error(server):
    client = RawClient(server.port)
    client.handshake()
    client.send_method(1, pika.spec.Channel.Open())
    client.read_method()
    client.send_method(1, pika.spec.Basic.Publish(exchange="", routing_key="q"))
    client.send(pika.frame.Header(1, 3, pika.spec.BasicProperties()).marshal())
    client.send(pika.frame.Body(1, b"toolong").marshal())
    _, close = client.read_method()
    assert isinstance(close, pika.spec.Connection.Close)
    assert close.reply_code == 501


def test_method_in_the_middle_of_content_is_unexpected_frame(server):
    client = RawClient(server.port)
    client.handshake()
    client.send_method(1, pika.spec.Channel.Open())
    client.read_method()
    client.send_method(1, pika.spec.Basic.Publish(exchange="", routing_key="q"))
    client.send_method(1, pika.spec.Basic.Qos(prefetch_count=1))
    _, close = client.read_method()
    assert close.reply_code == 505


def test_memory_alarm_blocks_publishers_while_consumers_drain():
    from hamq_server import HamqServer
    srv = HamqServer("--memory-high-watermark-bytes", "1000000").start()
    try:
        publisher = connect(srv)
        events = []
        publisher.add_on_connection_blocked_callback(lambda *a: events.append("blocked"))
        publisher.add_on_connection_unblocked_callback(lambda *a: events.append("unblocked"))
        channel = publisher.channel()
        channel.queue_declare("big")
        body = b"x" * 100_000
        for _ in range(20):
            channel.basic_publish("", "big", body)
        wait_for(publisher, lambda: events)
        assert events == ["blocked"]
        consumer = connect(srv)
        consumer_channel = consumer.channel()
        held = consumer_channel.queue_declare("big", passive=True).method.message_count
        assert 10 <= held < 20, held  # the server stopped reading at about 1 MB
        got = 0
        for _ in range(1000):
            if got == 20:
                break
            method, _, received = consumer_channel.basic_get("big", auto_ack=True)
            if method is None:
                publisher.process_data_events(time_limit=0.02)
            else:
                assert received == body
                got += 1
        assert got == 20  # nothing lost: the rest was read once the queue drained
        wait_for(publisher, lambda: events[-1] == "unblocked")
        consumer.close()
        publisher.close()
    finally:
        assert srv.stop() == 0


def test_flow_control_holds_a_publisher_back_from_a_queue_whose_consumers_lag(server):
    consumer = connect(server)
    consumer_channel = consumer.channel()
    consumer_channel.queue_declare("lagging")
    consumer_channel.basic_qos(prefetch_count=10)
    tag = consumer_channel.basic_consume("lagging", lambda *args: None)  # never acks
    publisher = connect(server)
    channel = publisher.channel()
    for i in range(20000):
        channel.basic_publish("", "lagging", b"m%d" % i)
    probe = connect(server).channel()

    def backlog():
        return probe.queue_declare("lagging", passive=True).method.message_count

    wait_for(publisher, lambda: backlog() > 4096)
    publisher.process_data_events(time_limit=0.3)  # reading has stopped: the backlog stays
    ready = backlog()
    # Reading stopped once the backlog passed 4096 (plus what one read had already brought).
    assert 4096 < ready < 8000, ready
    # Without consumers the backlog is no longer a lag: the publisher is read again. (pika
    # requeues the ten deliveries it held when it cancels.)
    consumer_channel.basic_cancel(tag)
    for _ in range(100):
        publisher.process_data_events(time_limit=0.05)
        ready = probe.queue_declare("lagging", passive=True).method.message_count
        if ready == 20000:
            break
    assert ready == 20000
    consumer.close()
    publisher.close()


def test_a_consumer_that_stops_reading_is_held_back_and_loses_nothing(server):
    stuck = RawClient(server.port, timeout_s=10)
    stuck.handshake()
    stuck.send_method(1, pika.spec.Channel.Open())
    stuck.read_method()
    stuck.send_method(1, pika.spec.Queue.Declare(queue="firehose"))
    stuck.read_method()
    stuck.send_method(1, pika.spec.Basic.Consume(queue="firehose", no_ack=True))
    stuck.read_method()
    publisher = connect(server)
    channel = publisher.channel()
    body = b"y" * 100_000
    for _ in range(500):  # 50 MB to a consumer that reads nothing
        channel.basic_publish("", "firehose", body)
    # Past a few MB of unsent output the broker keeps the rest in the queue.
    ready = channel.queue_declare("firehose", passive=True).method.message_count
    assert ready > 300, ready
    delivered = 0
    while delivered < 500:
        frame_type, _, payload = stuck.read_frame()
        if frame_type == 1 and isinstance(payload, pika.spec.Basic.Deliver):
            delivered += 1
    assert channel.queue_declare("firehose", passive=True).method.message_count == 0
    publisher.close()


def test_global_qos_is_shared_by_the_channels_consumers(server):
    connection = connect(server)
    channel = connection.channel()
    for name in ("shared-a", "shared-b"):
        channel.queue_declare(name)
        for i in range(10):
            channel.basic_publish("", name, b"%d" % i)
    channel.basic_qos(prefetch_count=3, global_qos=True)  # RabbitMQ: per channel
    received = []
    channel.basic_consume("shared-a", lambda ch, m, p, b: received.append(m))
    channel.basic_consume("shared-b", lambda ch, m, p, b: received.append(m))
    wait_for(connection, lambda: len(received) >= 3)
    connection.process_data_events(time_limit=0.2)  # no more than the limit arrives
    assert len(received) == 3
    channel.basic_ack(received[0].delivery_tag)
    wait_for(connection, lambda: len(received) >= 4)
    connection.process_data_events(time_limit=0.2)
    assert len(received) == 4
    channel.basic_ack(0, multiple=True)
    wait_for(connection, lambda: len(received) >= 7)
    connection.process_data_events(time_limit=0.2)
    assert len(received) == 7
    connection.close()


def test_per_consumer_qos_limits_each_consumer(server):
    connection = connect(server)
    channel = connection.channel()
    for name in ("own-a", "own-b"):
        channel.queue_declare(name)
        for i in range(10):
            channel.basic_publish("", name, b"%d" % i)
    channel.basic_qos(prefetch_count=2)
    received = []
    channel.basic_consume("own-a", lambda ch, m, p, b: received.append(m))
    channel.basic_consume("own-b", lambda ch, m, p, b: received.append(m))
    wait_for(connection, lambda: len(received) >= 4)
    connection.process_data_events(time_limit=0.2)
    assert len(received) == 4
    connection.close()
