"""Nodes join a running cluster and are forgotten at run time, with hamqctl (issue 14): a blank
node joins through any member and then serves the cluster's definitions; a stopped node is
forgotten through another; the metadata group's members follow, so that the joined node votes.

Runs in a network namespace of its own (tests/in_netns.sh): nodes on 127.0.0.11-14."""

import json
import pytest

from hamq_cluster import Cluster, address, eventually, exists, CLUSTER_PORT


@pytest.fixture
def cluster():
    cluster = Cluster(3).start()
    yield cluster
    cluster.stop()


def declare_exchange(cluster, i, name):
    connection = cluster.connect(i)
    connection.channel().exchange_declare(name, "topic", durable=True)
    connection.close()


def status(cluster, i):
    return json.loads(cluster.hamqctl(i, "--formatter", "json", "cluster_status"))


def running(cluster, i):
    return sorted(status(cluster, i)["running_nodes"])


def test_a_blank_node_joins_a_stopped_node_is_forgotten_and_the_joined_node_votes(cluster):
    declare_exchange(cluster, 1, "before-join")

    # A node started alone, with the cluster's secret, joins through n2.
    blank = cluster.add_blank_node(4)
    assert not exists(cluster, 4, "exchange", "before-join")
    out = cluster.hamqctl(4, "join_cluster", "n2@%s:%d" % (address(2), CLUSTER_PORT))
    assert "Clustering node n4" in out
    # It starts again, the same process, as the cluster's member, and serves its definitions.
    eventually(lambda: exists(cluster, 4, "exchange", "before-join"), timeout_s=20,
               what="the joined node serves the cluster's definitions")
    assert blank.alive()
    eventually(lambda: running(cluster, 1) == ["n1", "n2", "n3", "n4"],
               what="n1 lists the four nodes running")
    eventually(lambda: running(cluster, 4) == ["n1", "n2", "n3", "n4"],
               what="n4 lists the four nodes running")
    # The metadata group took it in: a learner first, a voter once it caught up.
    eventually(lambda: sorted(status(cluster, 1)["metadata_voters"]) == ["n1", "n2", "n3", "n4"],
               what="n4 votes in the metadata group")
    assert status(cluster, 4)["cluster_id"] == status(cluster, 1)["cluster_id"]

    # Declared through the new node, seen through the others.
    declare_exchange(cluster, 4, "from-n4")
    for i in (1, 2, 3):
        eventually(lambda: exists(cluster, i, "exchange", "from-n4"),
                   what="node %d sees what n4 declared" % i)

    # Refusals: a member does not join again; a running node is not forgotten.
    code, err = cluster.hamqctl_fails(1, "join_cluster", "n2@%s:%d" % (address(2), CLUSTER_PORT))
    assert code == 70 and "member of a cluster already" in err
    code, err = cluster.hamqctl_fails(1, "forget_cluster_node", "n3")
    assert code == 70 and "is running" in err
    code, err = cluster.hamqctl_fails(1, "forget_cluster_node", "n7")
    assert code == 70 and "no node 'n7'" in err

    # n3 stops and is forgotten through n1: every node drops it.
    assert cluster.nodes[3].stop() == 0
    eventually(lambda: "n3" not in running(cluster, 1), what="n1 sees n3 stopped")
    # (Refused while the metadata group elects a leader in n3's place: asked again.)
    eventually(lambda: cluster.hamqctl(1, "forget_cluster_node", "n3"),
               what="n3 is forgotten")
    for i in (1, 2, 4):
        eventually(lambda: "n3" not in status(cluster, i)["disk_nodes"],
                   what="node %d no longer lists n3" % i)
    eventually(lambda: sorted(status(cluster, 1)["metadata_voters"]) == ["n1", "n2", "n4"],
               what="n3 leaves the metadata group")

    # The metadata group is now n1, n2 and n4: with n2 killed, n1 and n4 are its majority, which
    # they are only if n4 became a voter and n3 left the group.
    cluster.nodes[2].kill()
    eventually(lambda: declare_exchange(cluster, 4, "after-n2-died") or True, timeout_s=20,
               what="a declare through n4 with n2 dead")
    eventually(lambda: exists(cluster, 1, "exchange", "after-n2-died"),
               what="n1 sees the declare made with n2 dead")

    # The joined node restarts with what it learnt: its peers, its place in the group.
    assert blank.stop() == 0
    blank.start()
    eventually(lambda: exists(cluster, 4, "exchange", "after-n2-died"), timeout_s=20,
               what="the restarted joined node serves the definitions")
    declare_exchange(cluster, 1, "after-n4-restart")
    eventually(lambda: exists(cluster, 4, "exchange", "after-n4-restart"),
               what="the restarted joined node follows the cluster")


def test_a_node_started_alone_grows_into_a_cluster_and_carries_on_without_its_first_node():
    cluster = Cluster(0)
    try:
        first = cluster.add_blank_node(1)
        declare_exchange(cluster, 1, "from-the-start")
        # A node alone with definitions takes members: each new one joins through any member.
        cluster.add_blank_node(2)
        cluster.hamqctl(2, "join_cluster", "n1@%s:%d" % (address(1), CLUSTER_PORT))
        cluster.add_blank_node(3)
        eventually(lambda: exists(cluster, 2, "exchange", "from-the-start"), timeout_s=20,
                   what="n2 serves what n1 had alone")
        cluster.hamqctl(3, "join_cluster", "n2@%s:%d" % (address(2), CLUSTER_PORT))
        eventually(lambda: exists(cluster, 3, "exchange", "from-the-start"), timeout_s=20,
                   what="n3 serves what n1 had alone")
        eventually(lambda: sorted(status(cluster, 1)["metadata_voters"]) == ["n1", "n2", "n3"],
                   what="the three nodes vote")
        # Three voters: the first node is not needed any more.
        first.kill()
        eventually(lambda: declare_exchange(cluster, 3, "without-n1") or True, timeout_s=20,
                   what="a declare through n3 with n1 dead")
        eventually(lambda: exists(cluster, 2, "exchange", "without-n1"),
                   what="n2 sees the declare made with n1 dead")
        # n1 comes back as a member of the cluster it grew into.
        first.start()
        eventually(lambda: exists(cluster, 1, "exchange", "without-n1"), timeout_s=20,
                   what="n1 catches up when it restarts")
    finally:
        cluster.stop()
