"""The x-delayed-message exchange as applications written for RabbitMQ's delayed-message plugin
use it: x-delayed-type, the x-delay header, routing by the bindings that exist when the delay is
up, and the negated x-delay on delivery."""

import time

import pika

from pika_helpers import connect, wait_until
import pika.exceptions
import pytest


def declare_delayed(channel, name="delayed", routing="direct"):
    channel.exchange_declare(name, "x-delayed-message", durable=True,
                             arguments={"x-delayed-type": routing})


def delayed(delay):
    return pika.BasicProperties(headers={"x-delay": delay})


def test_message_arrives_after_its_delay_with_x_delay_negated(server):
    connection = connect(server)
    channel = connection.channel()
    declare_delayed(channel)
    channel.queue_declare("later")
    channel.queue_bind("later", "delayed", "k")
    got = []
    channel.basic_consume("later", lambda ch, m, p, b: got.append((time.monotonic(), m, p, b)),
                          auto_ack=True)
    sent = time.monotonic()
    channel.basic_publish("delayed", "k", b"wake up", delayed(300))
    connection.process_data_events(time_limit=0.15)
    assert got == []
    wait_until(connection, lambda: len(got) == 1)
    arrived, method, properties, body = got[0]
    assert body == b"wake up"
    assert arrived - sent >= 0.28
    assert method.exchange == "delayed"
    assert method.routing_key == "k"
    assert properties.headers["x-delay"] == -300
    connection.close()


def test_messages_are_released_in_order_of_their_time_not_of_publishing(server):
    connection = connect(server)
    channel = connection.channel()
    declare_delayed(channel, "schedule", "fanout")
    channel.queue_declare("timeline")
    channel.queue_bind("timeline", "schedule")
    got = []
    channel.basic_consume("timeline", lambda ch, m, p, b: got.append(b), auto_ack=True)
    for body, delay in ((b"third", 600), (b"first", 100), (b"now", None), (b"second", 300)):
        channel.basic_publish("schedule", "", body,
                              delayed(delay) if delay else pika.BasicProperties())
    wait_until(connection, lambda: len(got) == 4)
    assert got == [b"now", b"first", b"second", b"third"]
    connection.close()


def test_routing_uses_the_bindings_that_exist_when_the_delay_is_up(server):
    connection = connect(server)
    channel = connection.channel()
    declare_delayed(channel, "topical", "topic")
    channel.queue_declare("early")
    channel.queue_declare("late")
    channel.queue_bind("early", "topical", "news.#")
    channel.basic_publish("topical", "news.sport", b"score", delayed(300))
    channel.queue_bind("late", "topical", "*.sport")  # bound while the message waits
    channel.queue_unbind("early", "topical", "news.#")  # and unbound
    wait_until(connection,
               lambda: channel.queue_declare("late", passive=True).method.message_count == 1)
    assert channel.queue_declare("early", passive=True).method.message_count == 0
    connection.close()


def test_delayed_messages_of_a_deleted_exchange_are_dropped(server):
    connection = connect(server)
    channel = connection.channel()
    declare_delayed(channel, "doomed")
    channel.queue_declare("never")
    channel.queue_bind("never", "doomed", "k")
    channel.basic_publish("doomed", "k", b"x", delayed(200))
    channel.exchange_delete("doomed")
    declare_delayed(channel, "doomed")  # a new exchange of the same name
    channel.queue_bind("never", "doomed", "k")
    connection.process_data_events(time_limit=0.5)
    assert channel.queue_declare("never", passive=True).method.message_count == 0
    connection.close()


def test_publisher_confirms_cover_delayed_messages(server):
    connection = connect(server)
    channel = connection.channel()
    channel.confirm_delivery()
    declare_delayed(channel)
    channel.basic_publish("delayed", "nowhere", b"x", delayed(100), mandatory=True)
    connection.close()


@pytest.mark.parametrize("arguments", [{}, {"x-delayed-type": "x-delayed-message"},
                                       {"x-delayed-type": "nonsense"},
                                       {"x-delayed-type": 5}])
def test_declare_without_a_valid_delayed_type_is_refused(server, arguments):
    connection = connect(server)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        connection.channel().exchange_declare("bad", "x-delayed-message", arguments=arguments)
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == ("PRECONDITION_FAILED - Invalid argument, "
                                        "'x-delayed-type' must be an existing exchange type")
    connection.close()


@pytest.mark.parametrize("header", [0, -5, "soon", 2**32])
def test_no_valid_delay_means_routed_at_once(server, header):
    connection = connect(server)
    channel = connection.channel()
    declare_delayed(channel)
    channel.queue_declare("now")
    channel.queue_bind("now", "delayed", "k")
    channel.basic_publish("delayed", "k", b"x", delayed(header))
    method, properties, body = channel.basic_get("now", auto_ack=True)
    assert body == b"x"
    connection.close()
