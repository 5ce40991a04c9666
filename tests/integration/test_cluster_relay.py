"""Any node serves any queue (issue 15): a client connected to a node that holds no member of a
replicated queue's group publishes to it with confirms, reads its counts, gets, consumes,
acknowledges, purges and deletes it, as on a member; its commands go through a member's node
(the relay), and so do the deliveries to its consumers. When that member dies, the queue goes
through another, and the consumer carries on with every message.

Runs in a network namespace of its own (tests/in_netns.sh): nodes on 127.0.0.11-14."""

import pika
import pytest

from hamq_cluster import Cluster, eventually
from test_cluster_queues import consume_redelivered, hold_unacked, publish_confirmed, queue_row


def members_of(cluster, i, name):
    return eventually(lambda: queue_row(cluster, i, name), what="n%d lists %s" % (i, name))[
        "members"]


def test_a_node_without_a_member_publishes_gets_consumes_purges_and_deletes():
    cluster = Cluster(3).start()
    try:
        connection = cluster.connect(2)
        connection.channel().queue_declare("solo", durable=True,
                                           arguments={"x-quorum-initial-group-size": 1})
        connection.close()
        assert members_of(cluster, 1, "solo") == ["n2"]

        # Everything through n1, which holds no member.
        connection = cluster.connect(1)
        channel = connection.channel()
        channel.confirm_delivery()
        bodies = [b"solo-%03d" % n for n in range(100)]
        assert publish_confirmed(channel, "solo", bodies) == bodies
        # The counts are n2's, asked through it.
        declared = channel.queue_declare("solo", passive=True)
        assert declared.method.message_count == 100
        assert declared.method.consumer_count == 0
        # The member holds them.
        assert queue_row(cluster, 2, "solo")["messages"] == 100

        method, _, body = channel.basic_get("solo")
        assert body == bodies[0] and method.message_count == 99
        channel.basic_ack(method.delivery_tag)
        # One taken and not acknowledged goes back when its channel closes.
        other = connection.channel()
        method, _, body = other.basic_get("solo")
        assert body == bodies[1]
        other.close()

        channel.basic_qos(prefetch_count=10)
        got = []
        for method, _, body in channel.consume("solo", inactivity_timeout=15):
            assert method is not None, "no delivery after %d" % len(got)
            got.append((body, method.redelivered))
            channel.basic_ack(method.delivery_tag)
            if len(got) == 99:
                break
        channel.cancel()
        assert got[0] == (bodies[1], True)
        assert got[1:] == [(body, False) for body in bodies[2:]]
        eventually(lambda: queue_row(cluster, 2, "solo")["messages"] == 0,
                   what="every acknowledgement reached the member")

        assert publish_confirmed(channel, "solo", bodies[:10]) == bodies[:10]
        # queue.delete if-empty asks the member for its count first: refused while it holds ten.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            channel.queue_delete("solo", if_empty=True)
        assert refused.value.reply_code == 406 and "not empty" in refused.value.reply_text
        channel = connection.channel()
        assert channel.queue_purge("solo").method.message_count == 10
        assert channel.queue_declare("solo", passive=True).method.message_count == 0
        channel.queue_delete("solo", if_empty=True)
        connection.close()
        for i in (1, 2, 3):
            eventually(lambda i=i: all(row["name"] != "solo" for row in queues(cluster, i)),
                       what="n%d saw solo deleted" % i)
    finally:
        cluster.stop()


def queues(cluster, i):
    import json
    return json.loads(cluster.hamqctl(i, "list_queues", "name", "--formatter", "json"))


def test_a_consumer_through_a_node_without_a_member_carries_on_when_its_member_dies():
    cluster = Cluster(4).start()
    try:
        connection = cluster.connect(1)
        connection.channel().queue_declare("wide", durable=True,
                                           arguments={"x-quorum-initial-group-size": 3})
        connection.close()
        members = members_of(cluster, 1, "wide")
        spare = next(i for i in (2, 3, 4) if "n%d" % i not in members)
        eventually(lambda: queue_row(cluster, spare, "wide"), what="the spare node lists it")

        connection = cluster.connect(spare)
        channel = connection.channel()
        channel.confirm_delivery()
        bodies = [b"wide-%03d" % n for n in range(100)]
        assert publish_confirmed(channel, "wide", bodies) == bodies

        # A consumer through the spare node takes and acknowledges some.
        channel.basic_qos(prefetch_count=10)
        acknowledged = []
        consuming = channel.consume("wide", inactivity_timeout=20)
        for method, _, body in consuming:
            assert method is not None
            acknowledged.append(body)
            channel.basic_ack(method.delivery_tag)
            if len(acknowledged) == 30:
                break
        # The member's node it goes through (the first of the members counting from its own id)
        # dies; a majority of the three members is left.
        through = int(members[spare % len(members)][1:])
        cluster.nodes[through].kill()
        # Published after the death, through the same node: confirmed too.
        more = [b"wide-more-%02d" % n for n in range(20)]
        assert publish_confirmed(channel, "wide", more) == more
        for method, _, body in consuming:
            assert method is not None, "no delivery after %d" % len(acknowledged)
            acknowledged.append(body)
            channel.basic_ack(method.delivery_tag)
            if set(acknowledged) == set(bodies + more):
                break
        channel.cancel()
        # Every message, in order apart from those redelivered (taken before the death and not
        # acknowledged then): nothing lost, and each at most twice.
        assert set(acknowledged) == set(bodies + more)
        assert all(acknowledged.count(body) <= 2 for body in acknowledged)
        assert len(acknowledged) <= len(bodies + more) + 10
        connection.close()
        alive = next(i for i in (1, 2, 3, 4) if "n%d" % i in members and i != through)
        eventually(lambda: queue_row(cluster, alive, "wide")["messages"] == 0,
                   what="every acknowledgement reached the members left")
    finally:
        cluster.stop()


def test_what_a_restarted_node_without_a_member_held_comes_back_redelivered():
    cluster = Cluster(3).start()
    try:
        connection = cluster.connect(2)
        channel = connection.channel()
        channel.queue_declare("kept", durable=True, arguments={"x-quorum-initial-group-size": 1})
        channel.confirm_delivery()
        bodies = [b"kept-%d" % n for n in range(10)]
        assert publish_confirmed(channel, "kept", bodies) == bodies
        connection.close()
        assert members_of(cluster, 1, "kept") == ["n2"]
        # A consumer through n1 (no member) takes all ten and acknowledges none; n1 dies and
        # starts again. The holders of its earlier life are detached (it has no replica to do it
        # itself): the messages are ready again, redelivered, through n1 as through any node.
        _, taken = hold_unacked(cluster, 1, "kept", 10)
        assert taken == bodies
        cluster.nodes[1].kill()
        cluster.nodes[1].start()
        got = consume_redelivered(cluster, 1, "kept", 10, timeout_s=20)
        assert sorted(got) == sorted((body, True) for body in bodies)
    finally:
        cluster.stop()


def test_a_consumer_through_a_node_without_a_member_carries_on_when_its_link_is_cut():
    # The link to the member's node it goes through is cut (packets dropped, not refused): what
    # was in flight on it is lost, the link is closed for silence, and the node goes through
    # another member, which sends again what its consumer holds and was not given.
    cluster = Cluster(4).start()
    try:
        connection = cluster.connect(1)
        connection.channel().queue_declare("cut", durable=True,
                                           arguments={"x-quorum-initial-group-size": 3})
        connection.close()
        members = members_of(cluster, 1, "cut")
        spare = next(i for i in (2, 3, 4) if "n%d" % i not in members)
        eventually(lambda: queue_row(cluster, spare, "cut"), what="the spare node lists it")
        connection = cluster.connect(spare)
        channel = connection.channel()
        channel.confirm_delivery()
        bodies = [b"cut-%03d" % n for n in range(60)]
        assert publish_confirmed(channel, "cut", bodies) == bodies
        channel.basic_qos(prefetch_count=10)
        acknowledged = []
        consuming = channel.consume("cut", inactivity_timeout=30)
        for method, _, body in consuming:
            assert method is not None
            acknowledged.append(body)
            channel.basic_ack(method.delivery_tag)
            if len(acknowledged) == 20:
                break
        through = int(members[spare % len(members)][1:])
        cluster.cut(spare, [through])
        more = [b"cut-more-%02d" % n for n in range(20)]
        assert publish_confirmed(channel, "cut", more) == more
        for method, _, body in consuming:
            assert method is not None, "no delivery after %d" % len(acknowledged)
            acknowledged.append(body)
            channel.basic_ack(method.delivery_tag)
            if set(acknowledged) == set(bodies + more):
                break
        channel.cancel()
        assert set(acknowledged) == set(bodies + more)
        assert all(acknowledged.count(body) <= 2 for body in acknowledged)
        connection.close()
        cluster.heal()
        eventually(lambda: queue_row(cluster, through, "cut")["messages"] == 0,
                   what="every acknowledgement reached the members")
    finally:
        cluster.heal()
        cluster.stop()
