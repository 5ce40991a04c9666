"""Three hamq-server nodes form a cluster; definitions declared through any node are the same on
every node, survive a node killed with SIGKILL and reach it when it restarts, and reach a node
cut off from the others once the link heals (issue 14).

Runs in a network namespace of its own (tests/in_netns.sh): nodes on 127.0.0.11-13."""

import pika
import pytest

from hamq_cluster import Cluster, eventually, exists


@pytest.fixture
def cluster():
    cluster = Cluster(3).start()
    yield cluster
    cluster.stop()


def declare_through(cluster, i, suffix):
    connection = cluster.connect(i)
    channel = connection.channel()
    channel.exchange_declare("orders-" + suffix, "topic", durable=True)
    channel.queue_declare("work-" + suffix, durable=True)
    channel.queue_bind("work-" + suffix, "orders-" + suffix, "eu.#")
    connection.close()


def test_definitions_declared_through_any_node_are_on_every_node(cluster):
    for i in (1, 2, 3):
        declare_through(cluster, i, "from-%d" % i)
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            eventually(lambda: exists(cluster, i, "queue", "work-from-%d" % j),
                       what="node %d sees the queue declared through node %d" % (i, j))
            eventually(lambda: exists(cluster, i, "exchange", "orders-from-%d" % j),
                       what="node %d sees the exchange declared through node %d" % (i, j))
    # A delete through one node is a delete everywhere.
    connection = cluster.connect(2)
    connection.channel().queue_delete("work-from-1")
    connection.close()
    for i in (1, 2, 3):
        eventually(lambda: not exists(cluster, i, "queue", "work-from-1"),
                   what="node %d no longer sees the deleted queue" % i)


def test_a_declare_ok_through_one_node_is_seen_at_once_through_the_others(cluster):
    # declare-ok means committed; a look through another node that has not applied it yet
    # waits until it has (a barrier through the metadata log) before it answers 404.
    connections = {i: cluster.connect(i) for i in (1, 2, 3)}
    channels = {i: connections[i].channel() for i in (1, 2, 3)}
    for round in range(10):
        for i in (1, 2, 3):
            name = "at-once-%d-%d" % (round, i)
            channels[i].queue_declare(name, durable=round % 2 == 0)
            channels[i].exchange_declare("x-" + name, "fanout")
            for j in (1, 2, 3):
                channels[j].queue_declare(name, passive=True)
                channels[j].exchange_declare("x-" + name, passive=True)
    for connection in connections.values():
        connection.close()


def test_two_nodes_declaring_one_name_differently_cannot_both_succeed(cluster):
    first = cluster.connect(1)
    first.channel().queue_declare("contested", durable=True)
    second = cluster.connect(3)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        second.channel().queue_declare("contested", durable=False)
    assert refused.value.reply_code == 406
    assert "inequivalent arg 'durable'" in refused.value.reply_text
    first.close()
    second.close()


def test_a_killed_node_misses_nothing_once_it_restarts(cluster):
    declare_through(cluster, 1, "before")
    cluster.nodes[3].kill()
    # Two of three still decide (after an election, if the killed node led).
    eventually(lambda: declare_through(cluster, 1, "while-down") or True,
               what="a declare with one node down")
    eventually(lambda: exists(cluster, 2, "queue", "work-while-down"))
    cluster.nodes[3].start()
    assert exists(cluster, 3, "queue", "work-before")
    eventually(lambda: exists(cluster, 3, "queue", "work-while-down"),
               what="the restarted node catches up")


def test_a_node_cut_off_catches_up_when_the_link_heals(cluster):
    declare_through(cluster, 2, "before")
    eventually(lambda: exists(cluster, 3, "queue", "work-before"))
    cluster.cut(3, [1, 2])
    try:
        eventually(lambda: declare_through(cluster, 1, "while-cut") or True,
                   what="a declare through the majority")
        # The cut-off node cannot decide anything alone, and does not see it.
        assert not exists(cluster, 3, "queue", "work-while-cut")
    finally:
        cluster.heal()
    eventually(lambda: exists(cluster, 3, "queue", "work-while-cut"), timeout_s=20,
               what="the healed node catches up")


def test_hamqctl_shows_the_cluster_and_where_each_queue_lives(cluster):
    import json
    status = json.loads(cluster.hamqctl(1, "cluster_status", "--formatter", "json"))
    assert status["node"] == "n1"
    assert status["disk_nodes"] == ["n1", "n2", "n3"]
    eventually(lambda: json.loads(cluster.hamqctl(2, "cluster_status", "--formatter", "json"))
               ["running_nodes"] == ["n1", "n2", "n3"], what="every node running")
    assert status["metadata_leader"] in ("n1", "n2", "n3")
    text = cluster.hamqctl(1, "cluster_status").splitlines()
    assert text[0] == "Cluster status of node n1 ..."
    assert text[text.index("Disk Nodes") + 2:text.index("Disk Nodes") + 5] == ["n1", "n2", "n3"]
    connection = cluster.connect(2)
    channel = connection.channel()
    # A group of one member (the declaring node), so that another node has the queue but not
    # its log (test_cluster_queues.py has the replicated ones).
    channel.queue_declare("jobs", durable=True, arguments={"x-quorum-initial-group-size": 1})
    channel.basic_publish("", "jobs", b"one")
    channel.basic_publish("", "jobs", b"two")
    channel.basic_consume("jobs", lambda *args: None)
    columns = ["name", "type", "durable", "leader", "members", "online", "messages", "consumers"]

    def jobs_row(i):
        rows = json.loads(cluster.hamqctl(i, "list_queues", *columns, "--formatter", "json"))
        assert all(list(row) == columns for row in rows)
        return next(row for row in rows if row["name"] == "jobs")

    # Node 2 holds it: its counts are there (two messages, delivered to the consumer). The
    # publishes are not confirmed, so the counts are waited for rather than read once.
    expected = {"name": "jobs", "type": "classic", "durable": True, "leader": "n2",
                "members": ["n2"], "online": ["n2"], "messages": 2, "consumers": 1}
    seen = []

    def jobs_row_is_expected():
        seen[:] = [jobs_row(2)]
        return seen[0] == expected
    try:
        eventually(jobs_row_is_expected, what="node 2 lists jobs with its counts")
    except AssertionError:
        assert seen and seen[0] == expected
        raise
    # Another node knows where it lives, not its counts.
    row = eventually(lambda: jobs_row(3), what="node 3 lists jobs")
    assert (row["leader"], row["members"], row["messages"]) == ("n2", ["n2"], None)
    connection.close()
    table = cluster.hamqctl(1, "list_queues", "name", "leader")
    assert "name\tleader" in table.splitlines()
    assert "jobs\tn2" in table.splitlines()
    cluster.nodes[3].kill()
    eventually(lambda: json.loads(cluster.hamqctl(1, "cluster_status", "--formatter", "json"))
               ["running_nodes"] == ["n1", "n2"], what="n3 seen down")
