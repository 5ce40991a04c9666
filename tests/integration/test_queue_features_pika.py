"""Queue features of the queue-features issue, as pika users meet them: priorities and single
active consumer."""

import pika


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
    first.process_data_events(time_limit=0.3)
    second.process_data_events(time_limit=0.3)
    assert got == {"first": [b"a0", b"a1", b"a2", b"a3", b"a4"], "second": []}
    first.close()
    for i in range(3):
        publisher.basic_publish("", "sac", b"b%d" % i)
    second.process_data_events(time_limit=0.3)
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
