"""Queue features of the queue-features issue, as pika users meet them: priorities and single
active consumer."""

import pika


def pump(connections, until, timeout_s=10):
    """Processes events on the connections until `until()` holds (fails after timeout_s)."""
    import time
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "condition not reached in time"
        for connection in connections:
            connection.process_data_events(time_limit=0.01)


def connect(server):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, connection_attempts=1))


def test_priority_queue_delivers_highest_priority_first(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("jobs", arguments={"x-max-priority": 10})
    for body, priority in ((b"low", 1), (b"urgent", 10), (b"none", None), (b"mid", 5),
                           (b"urgent-2", 10)):
        channel.basic_publish("", "jobs", body,
                              properties=pika.BasicProperties(priority=priority))
    order = []
    while True:
        method, _, body = channel.basic_get("jobs", auto_ack=True)
        if method is None:
            break
        order.append(body)
    assert order == [b"urgent", b"urgent-2", b"mid", b"low", b"none"]
    connection.close()


def test_single_active_consumer_hands_over_when_the_active_one_leaves(server):
    setup = connect(server)
    setup.channel().queue_declare("sac", arguments={"x-single-active-consumer": True})
    first = connect(server)
    second = connect(server)
    got = {"first": [], "second": []}
    first_channel = first.channel()
    first_channel.basic_consume("sac", lambda ch, m, p, b: got["first"].append(b), auto_ack=True)
    second_channel = second.channel()
    second_channel.basic_consume("sac", lambda ch, m, p, b: got["second"].append(b),
                                 auto_ack=True)
    publisher = setup.channel()
    for i in range(5):
        publisher.basic_publish("", "sac", b"a%d" % i)
    pump([first, second], lambda: len(got["first"]) == 5)
    second.process_data_events(time_limit=0.2)  # the waiting consumer gets nothing
    assert got == {"first": [b"a0", b"a1", b"a2", b"a3", b"a4"], "second": []}
    first.close()
    for i in range(3):
        publisher.basic_publish("", "sac", b"b%d" % i)
    pump([second], lambda: len(got["second"]) == 3)
    assert got["second"] == [b"b0", b"b1", b"b2"]
    second.close()
    setup.close()


def test_bad_priority_argument_is_refused(server):
    import pika.exceptions
    import pytest
    connection = connect(server)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        connection.channel().queue_declare("bad", arguments={"x-max-priority": 300})
    assert refused.value.reply_code == 406
    assert "invalid arg 'x-max-priority'" in refused.value.reply_text


def x_death(properties):
    return properties.headers["x-death"]


def test_rejected_message_is_dead_lettered_with_its_history(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
    channel.basic_publish("", "work", b"job", properties=pika.BasicProperties(
        expiration="60000", headers={"CC": ["elsewhere"]}))
    method, _, _ = channel.basic_get("work")
    channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, body = channel.basic_get("dead", auto_ack=True)
    assert body == b"job"
    assert method.exchange == "dlx"
    assert method.routing_key == "work"
    assert properties.expiration is None
    (death,) = x_death(properties)
    assert death["count"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == "work"
    assert death["exchange"] == ""
    assert death["routing-keys"] == ["work", "elsewhere"]
    assert death["original-expiration"] == "60000"
    assert death["time"].year >= 2026  # pika decodes the timestamp to a datetime
    assert properties.headers["x-first-death-queue"] == "work"
    assert properties.headers["x-first-death-reason"] == "rejected"
    assert properties.headers["x-last-death-queue"] == "work"
    connection.close()


def test_retry_loop_through_rejections_counts_deaths(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("retry-dlx", "direct")
    channel.queue_declare("retry-work", arguments={"x-dead-letter-exchange": "retry-dlx",
                                                   "x-dead-letter-routing-key": "parked"})
    channel.queue_declare("retry-parked", arguments={"x-dead-letter-exchange": "",
                                                     "x-dead-letter-routing-key": "retry-work"})
    channel.queue_bind("retry-parked", "retry-dlx", "parked")
    channel.basic_publish("", "retry-work", b"flaky")
    for _ in range(2):  # fail in work, fail again in parked: back to work
        method, _, _ = channel.basic_get("retry-work")
        channel.basic_reject(method.delivery_tag, requeue=False)
        method, _, _ = channel.basic_get("retry-parked")
        channel.basic_reject(method.delivery_tag, requeue=False)
    method, properties, body = channel.basic_get("retry-work", auto_ack=True)
    assert body == b"flaky"
    deaths = x_death(properties)
    assert [(d["queue"], d["reason"], d["count"]) for d in deaths] == [
        ("retry-parked", "rejected", 2), ("retry-work", "rejected", 2)]
    assert properties.headers["x-first-death-queue"] == "retry-work"
    assert properties.headers["x-last-death-queue"] == "retry-parked"
    connection.close()


def test_max_length_drop_head_dead_letters_with_reason_maxlen(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("overflowed")
    channel.queue_declare("bounded", arguments={"x-max-length": 2,
                                                "x-dead-letter-exchange": "",
                                                "x-dead-letter-routing-key": "overflowed"})
    for i in range(5):
        channel.basic_publish("", "bounded", b"%d" % i)
    assert channel.queue_declare("bounded", passive=True).method.message_count == 2
    bodies = []
    while True:
        method, properties, body = channel.basic_get("overflowed", auto_ack=True)
        if method is None:
            break
        assert x_death(properties)[0]["reason"] == "maxlen"
        bodies.append(body)
    assert bodies == [b"0", b"1", b"2"]
    connection.close()


def test_reject_publish_nacks_the_publisher(server):
    import pika.exceptions
    import pytest
    connection = connect(server)
    channel = connection.channel()
    channel.confirm_delivery()
    channel.queue_declare("full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.basic_publish("", "full", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full", b"refused")
    assert channel.queue_declare("full", passive=True).method.message_count == 1
    connection.close()


def test_dead_letters_refused_by_a_full_target_wait_in_their_queue_until_it_has_room(server):
    # RabbitMQ drops them (at-most-once); hamq keeps them and offers them again.
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("full-dlx", "fanout")
    channel.queue_declare("small-dlq", arguments={"x-max-length": 1,
                                                  "x-overflow": "reject-publish"})
    channel.queue_bind("small-dlq", "full-dlx")
    channel.queue_declare("source", arguments={"x-dead-letter-exchange": "full-dlx"})
    for i in range(3):
        channel.basic_publish("", "source", b"d%d" % i)
    for _ in range(3):
        method, _, _ = channel.basic_get("source")
        channel.basic_reject(method.delivery_tag, requeue=False)
    got = []
    import time
    deadline = time.monotonic() + 10
    while len(got) < 3:
        assert time.monotonic() < deadline, "dead letters lost: got %r" % got
        method, _, body = channel.basic_get("small-dlq", auto_ack=True)
        if method is None:
            connection.process_data_events(time_limit=0.05)
        else:
            got.append(body)
    assert got == [b"d0", b"d1", b"d2"]
    connection.close()


def test_dead_letters_with_no_route_are_kept_until_one_exists(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("orphans", arguments={"x-dead-letter-exchange": "not-yet"})
    channel.basic_publish("", "orphans", b"wait for me")
    method, _, _ = channel.basic_get("orphans")
    channel.basic_reject(method.delivery_tag, requeue=False)
    connection.process_data_events(time_limit=0.3)
    channel.exchange_declare("not-yet", "fanout")
    channel.queue_declare("finally")
    channel.queue_bind("finally", "not-yet")
    pump([connection], lambda: channel.queue_declare("finally", passive=True)
         .method.message_count == 1)
    connection.close()


def test_at_most_once_dead_lettering_drops_what_has_no_route_as_rabbitmq_does(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("careless", arguments={"x-dead-letter-exchange": "missing",
                                                 "x-dead-letter-strategy": "at-most-once"})
    channel.basic_publish("", "careless", b"gone")
    method, _, _ = channel.basic_get("careless")
    channel.basic_reject(method.delivery_tag, requeue=False)
    channel.exchange_declare("missing", "fanout")
    channel.queue_declare("too-late")
    channel.queue_bind("too-late", "missing")
    connection.process_data_events(time_limit=1.5)
    assert channel.queue_declare("too-late", passive=True).method.message_count == 0
    connection.close()
