"""Message TTL as pika users meet it: x-message-ttl, the expiration property, dead-lettering
with reason expired, and what hamq does better than RabbitMQ: a message expires on time even
behind one that does not."""

import time

import pika

from pika_helpers import connect, exists, wait_until
import pika.exceptions
import pytest


def ready_count(channel, queue):
    return channel.queue_declare(queue, passive=True).method.message_count


def declare_with_dead_letters(channel, queue, arguments):
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare(queue, arguments={"x-dead-letter-exchange": "dlx", **arguments})


def test_queue_ttl_expires_messages_into_the_dead_letter_queue(server):
    connection = connect(server)
    channel = connection.channel()
    declare_with_dead_letters(channel, "short-lived", {"x-message-ttl": 200})
    dead = []
    channel.basic_consume("dead", lambda ch, m, p, b: dead.append((p, b)), auto_ack=True)
    started = time.monotonic()
    for i in range(3):
        channel.basic_publish("", "short-lived", b"m%d" % i)
    wait_until(connection, lambda: len(dead) == 3)
    assert time.monotonic() - started >= 0.15
    assert [body for _, body in dead] == [b"m0", b"m1", b"m2"]
    properties = dead[0][0]
    death = properties.headers["x-death"][0]
    assert death["reason"] == "expired"
    assert death["queue"] == "short-lived"
    assert death["count"] == 1
    assert properties.headers["x-first-death-reason"] == "expired"
    assert ready_count(channel, "short-lived") == 0
    connection.close()


def test_message_expires_on_time_behind_one_that_does_not(server):
    connection = connect(server)
    channel = connection.channel()
    declare_with_dead_letters(channel, "mixed", {})
    channel.basic_publish("", "mixed", b"forever")
    channel.basic_publish("", "mixed", b"soon", pika.BasicProperties(expiration="100"))
    dead = []
    channel.basic_consume("dead", lambda ch, m, p, b: dead.append((p, b)), auto_ack=True)
    # RabbitMQ keeps "soon" until "forever" has left the head; hamq expires it on time.
    wait_until(connection, lambda: len(dead) == 1)
    properties, body = dead[0]
    assert body == b"soon"
    assert properties.expiration is None  # removed, kept in x-death
    assert properties.headers["x-death"][0]["original-expiration"] == "100"
    assert ready_count(channel, "mixed") == 1
    method, _, body = channel.basic_get("mixed", auto_ack=True)
    assert body == b"forever"
    connection.close()


def test_expiration_zero_is_delivered_only_to_a_waiting_consumer(server):
    connection = connect(server)
    channel = connection.channel()
    declare_with_dead_letters(channel, "now-or-never", {})
    dead = []
    channel.basic_consume("dead", lambda ch, m, p, b: dead.append(b), auto_ack=True)
    channel.basic_publish("", "now-or-never", b"nobody", pika.BasicProperties(expiration="0"))
    wait_until(connection, lambda: dead == [b"nobody"])
    got = []
    channel.basic_consume("now-or-never", lambda ch, m, p, b: got.append(b), auto_ack=True)
    channel.basic_publish("", "now-or-never", b"someone", pika.BasicProperties(expiration="0"))
    wait_until(connection, lambda: got == [b"someone"])
    assert dead == [b"nobody"]
    connection.close()


def test_unacked_message_does_not_expire_until_it_is_returned(server):
    connection = connect(server)
    channel = connection.channel()
    declare_with_dead_letters(channel, "held", {"x-message-ttl": 100})
    channel.basic_publish("", "held", b"in hand")
    method, _, _ = channel.basic_get("held", auto_ack=False)
    dead = []
    channel.basic_consume("dead", lambda ch, m, p, b: dead.append(b), auto_ack=True)
    connection.process_data_events(time_limit=0.3)
    assert dead == []
    channel.basic_nack(method.delivery_tag, requeue=True)  # back past its time: expires
    wait_until(connection, lambda: dead == [b"in hand"])
    assert ready_count(channel, "held") == 0
    connection.close()


@pytest.mark.parametrize("expiration,error", [("60s", "leftover_string"),
                                              ("-1", "value_negative"),
                                              ("soon", "no_integer")])
def test_invalid_expiration_closes_the_channel(server, expiration, error):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("q")
    channel.basic_publish("", "q", b"x", pika.BasicProperties(expiration=expiration))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.queue_declare("q", passive=True)
    assert closed.value.reply_code == 406
    assert closed.value.reply_text == (
        "PRECONDITION_FAILED - invalid expiration '%s': {error,%s}" % (expiration, error))
    assert ready_count(connection.channel(), "q") == 0
    connection.close()



def test_unused_queue_expires_and_its_messages_are_not_dead_lettered(server):
    connection = connect(server)
    channel = connection.channel()
    declare_with_dead_letters(channel, "lease", {"x-expires": 300})
    channel.basic_publish("", "lease", b"goes with the queue")
    started = time.monotonic()
    wait_until(connection, lambda: not exists(connection, "queue", "lease"))
    assert time.monotonic() - started >= 0.25
    assert ready_count(connection.channel(), "dead") == 0
    connection.close()


def test_queue_with_a_consumer_does_not_expire_and_use_renews_the_lease(server):
    connection = connect(server)
    channel = connection.channel()
    # The gets come every 0.15 s against a lease of 1 s: a loaded machine may stall for a while
    # without the lease running out in between.
    channel.queue_declare("watched", arguments={"x-expires": 1000})
    tag = channel.basic_consume("watched", lambda *args: None, auto_ack=True)
    connection.process_data_events(time_limit=1.5)
    assert exists(connection, "queue", "watched")
    channel.basic_cancel(tag)  # unused from now on
    for _ in range(4):  # basic.get keeps it alive
        connection.process_data_events(time_limit=0.15)
        channel.basic_get("watched", auto_ack=True)
    assert exists(connection, "queue", "watched")
    wait_until(connection, lambda: not exists(connection, "queue", "watched"))
    connection.close()


def test_a_redeclare_renews_a_classic_queues_lease_but_not_a_quorum_queues(server):
    # Reference: quorum queues do not renew the x-expires lease on a redeclare.
    connection = connect(server)
    channel = connection.channel()
    queues = {"classic-lease": {"x-expires": 600},
              "quorum-lease": {"x-expires": 600, "x-queue-type": "quorum"}}
    for name, arguments in queues.items():
        channel.queue_declare(name, durable=True, arguments=arguments)
        channel.basic_publish("", name, b"kept while the queue lives")
    started = time.monotonic()
    while time.monotonic() - started < 1.2:  # a redeclare every 0.2 s
        connection.process_data_events(time_limit=0.2)
        counts = {name: channel.queue_declare(name, durable=True, arguments=arguments)
                  .method.message_count for name, arguments in queues.items()}
    # The classic queue lived on; the quorum queue expired at 0.6 s (and was declared anew).
    assert counts == {"classic-lease": 1, "quorum-lease": 0}
    connection.close()
