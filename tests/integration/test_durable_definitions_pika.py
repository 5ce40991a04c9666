"""Durable exchanges, durable queues and the bindings between them survive a SIGKILL of the
broker; transient ones do not. (Their messages: test_durable_messages_pika.py.)"""

import pika
import pika.exceptions
import pytest

from pika_helpers import connect, exists



def test_durable_definitions_survive_sigkill_and_transient_ones_do_not(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("orders", "topic", durable=True)
    channel.exchange_declare("scratch", "fanout", durable=False)
    channel.exchange_declare("later", "x-delayed-message", durable=True,
                             arguments={"x-delayed-type": "direct"})
    channel.queue_declare("keep", durable=True, arguments={"x-max-length": 5,
                                                           "x-message-ttl": 60000})
    channel.queue_declare("lose", durable=False)
    channel.queue_bind("keep", "orders", "eu.#")
    channel.queue_bind("keep", "amq.direct", "direct-key")
    channel.queue_bind("lose", "orders", "#")
    channel.exchange_bind("orders", "later", "eu.late")  # exchange to exchange, both durable
    channel.queue_declare("deleted", durable=True)
    channel.queue_delete("deleted")
    connection.close()

    server.kill()
    server.start()

    connection = connect(server)
    assert exists(connection, "exchange", "orders")
    assert exists(connection, "exchange", "later")
    assert not exists(connection, "exchange", "scratch")
    assert exists(connection, "queue", "keep")
    assert not exists(connection, "queue", "lose")
    assert not exists(connection, "queue", "deleted")
    channel = connection.channel()
    # The arguments came back: a redeclare with different ones is refused.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.queue_declare("keep", durable=True, arguments={"x-max-length": 6,
                                                               "x-message-ttl": 60000})
    assert refused.value.reply_code == 406
    channel = connection.channel()
    channel.basic_publish("orders", "eu.new", b"by topic")
    channel.basic_publish("amq.direct", "direct-key", b"by amq.direct")
    channel.basic_publish("later", "eu.late", b"through the delayed exchange's binding")
    assert channel.queue_declare("keep", passive=True).method.message_count == 3
    connection.close()


def test_definitions_deleted_before_a_restart_stay_deleted(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("temporary", "direct", durable=True)
    channel.queue_declare("q", durable=True)
    channel.queue_bind("q", "temporary", "k")
    channel.queue_unbind("q", "temporary", "k")
    channel.exchange_delete("temporary")
    connection.close()
    server.kill()
    server.start()
    connection = connect(server)
    assert not exists(connection, "exchange", "temporary")
    assert exists(connection, "queue", "q")
    connection.close()


def test_many_changes_compact_the_metadata_log_and_still_restore(server):
    # Past 1,000 changes the metadata group replaces its log by a snapshot of the definitions.
    connection = connect(server)
    channel = connection.channel()
    for i in range(1100):
        channel.queue_declare("many-%d" % i, durable=True)
    for i in range(0, 1100, 2):
        channel.queue_delete("many-%d" % i)
    connection.close()
    server.kill()
    server.start()
    # (and the parking queue, hamq.parked)
    assert server.wait_for_log(r"restored 0 exchange\(s\), 551 queue\(s\)")
    connection = connect(server)
    assert exists(connection, "queue", "many-1")
    assert not exists(connection, "queue", "many-0")
    connection.close()
