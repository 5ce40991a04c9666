"""The members of replicated queues change at run time (issue 15): hamqctl add_member, grow,
delete_member, shrink and quorum_status as rabbitmq-queues has them; a new member catches up as a
learner and is promoted, a member left out lets its replica go, and a queue that had a member on
a forgotten node gets one elsewhere without an operator.

Runs in a network namespace of its own (tests/in_netns.sh): nodes on 127.0.0.11-14."""

import json

import pika

from hamq_cluster import Cluster, eventually
from test_cluster_queues import consume, publish_confirmed, queue_row


def declare(cluster, i, name, size=None):
    connection = cluster.connect(i)
    arguments = {"x-quorum-initial-group-size": size} if size else None
    connection.channel().queue_declare(name, durable=True, arguments=arguments)
    connection.close()


def publish(cluster, i, name, bodies):
    connection = cluster.connect(i)
    channel = connection.channel()
    channel.confirm_delivery()
    assert publish_confirmed(channel, name, bodies) == bodies
    connection.close()


def status(cluster, i, name):
    return {row["node"]: row for row in json.loads(
        cluster.hamqctl(i, "--formatter", "json", "quorum_status", name))}


def members(cluster, i, name):
    return sorted(queue_row(cluster, i, name)["members"])


def voters_as_leader_sees(cluster, name):
    """The voters of the queue's group, asked of its leader (which knows every member)."""
    leader = int(eventually(lambda: queue_row(cluster, 1, name)["leader"], timeout_s=15,
                            what="a leader of " + name)[1:])
    rows = status(cluster, leader, name)
    return sorted(node for node, row in rows.items() if row["membership"] == "voter")


def test_members_added_catch_up_are_promoted_and_carry_the_queue_when_the_first_dies():
    cluster = Cluster(3).start()
    try:
        declare(cluster, 1, "grown", size=1)
        assert members(cluster, 1, "grown") == ["n1"]
        bodies = [b"grown-%03d" % n for n in range(200)]
        publish(cluster, 1, "grown", bodies)

        out = cluster.hamqctl(1, "add_member", "grown", "n2")
        assert "Adding a replica for queue grown in vhost / on node n2" in out
        # grow: every replicated queue without a member on n3 gets one.
        rows = json.loads(cluster.hamqctl(1, "--formatter", "json", "grow", "n3", "all"))
        assert {(row["name"], row["size"], row["result"]) for row in rows} == {("grown", 3, "ok")}
        for i in (1, 2, 3):
            eventually(lambda i=i: members(cluster, i, "grown") == ["n1", "n2", "n3"],
                       what="n%d to list the new members" % i)
        # The leader (n1, the only voter so far) adds each as a learner, promotes it once it
        # caught up: n2 and n3 vote, and each holds every message.
        eventually(lambda: voters_as_leader_sees(cluster, "grown") == ["n1", "n2", "n3"],
                   timeout_s=20, what="n2 and n3 promoted to voters")
        for i in (2, 3):
            eventually(lambda i=i: queue_row(cluster, i, "grown")["messages"] == 200,
                       what="n%d's replica caught up" % i)

        # Refused: a member already, an unknown node.
        code, err = cluster.hamqctl_fails(1, "add_member", "grown", "n2")
        assert code == 70 and "already" in err
        code, err = cluster.hamqctl_fails(1, "add_member", "grown", "n9")
        assert code == 70 and "no node" in err

        # n1 dies: n2 and n3, a majority of the three, elect and serve everything.
        cluster.nodes[1].kill()
        assert consume(cluster, 2, "grown", lambda got: len(got) == 200) == bodies
    finally:
        cluster.stop()


def test_a_member_deleted_lets_its_replica_go_and_the_others_carry_on():
    cluster = Cluster(3).start()
    try:
        declare(cluster, 1, "trimmed")
        assert members(cluster, 1, "trimmed") == ["n1", "n2", "n3"]
        bodies = [b"trimmed-%02d" % n for n in range(50)]
        publish(cluster, 1, "trimmed", bodies)
        eventually(lambda: queue_row(cluster, 3, "trimmed")["messages"] == 50,
                   what="n3's replica caught up")

        cluster.hamqctl(2, "delete_member", "trimmed", "n3")
        for i in (1, 2, 3):
            eventually(lambda i=i: members(cluster, i, "trimmed") == ["n1", "n2"],
                       what="n%d to list the members left" % i)
        # The group removed n3; n3 applied its removal and let its replica go: it holds no
        # member now, and counts nothing.
        eventually(lambda: voters_as_leader_sees(cluster, "trimmed") == ["n1", "n2"],
                   what="n3 removed from the group")
        code, err = eventually(lambda: cluster.hamqctl_fails(3, "quorum_status", "trimmed"),
                               what="n3's replica gone")
        assert code == 70 and "no member on node n3" in err
        assert any("no member of it any more: its replica goes" in line
                   for line in cluster.nodes[3].log)
        assert queue_row(cluster, 3, "trimmed")["messages"] is None
        # Its clients go on through the members left.
        publish(cluster, 3, "trimmed", [b"trimmed-50"])
        eventually(lambda: queue_row(cluster, 1, "trimmed")["messages"] == 51,
                   what="a publish through n3 reached the members")
        bodies.append(b"trimmed-50")

        # The last member stays: shrink leaves it, delete_member refuses it.
        # (hamq.parked, where dead letters wait for their target, is replicated too.)
        rows = json.loads(cluster.hamqctl(1, "--formatter", "json", "shrink", "n2"))
        assert {(row["name"], row["size"], row["result"]) for row in rows} == {
            ("trimmed", 1, "ok"), ("hamq.parked", 2, "ok")}
        eventually(lambda: voters_as_leader_sees(cluster, "trimmed") == ["n1"],
                   what="n2 removed from the group")
        code, err = cluster.hamqctl_fails(1, "delete_member", "trimmed", "n1")
        assert code == 70 and "last member" in err
        assert consume(cluster, 1, "trimmed", lambda got: len(got) == 51) == bodies
    finally:
        cluster.stop()


def test_a_queue_with_a_member_on_a_forgotten_node_gets_one_on_another_node():
    cluster = Cluster(4).start()
    try:
        declare(cluster, 1, "mended", size=3)
        before = members(cluster, 1, "mended")
        assert len(before) == 3 and "n1" in before
        spare = next(n for n in ("n2", "n3", "n4") if n not in before)
        lost = next(n for n in before if n != "n1")
        bodies = [b"mended-%02d" % n for n in range(30)]
        publish(cluster, 1, "mended", bodies)

        cluster.nodes[int(lost[1:])].kill()
        cluster.hamqctl(1, "forget_cluster_node", lost)
        # Repaired without an operator: the spare node replaces the forgotten one, catches up
        # and votes.
        wanted = sorted(set(before) - {lost} | {spare})
        eventually(lambda: members(cluster, 1, "mended") == wanted, timeout_s=20,
                   what="the forgotten member replaced")
        eventually(lambda: voters_as_leader_sees(cluster, "mended") == wanted, timeout_s=20,
                   what="the new member promoted")
        i = int(spare[1:])
        eventually(lambda: queue_row(cluster, i, "mended")["messages"] == 30,
                   what="the new member caught up")
        assert consume(cluster, i, "mended", lambda got: len(got) == 30) == bodies
    finally:
        cluster.stop()


def test_a_queue_moves_to_another_node_its_leader_leaving_last():
    # add_member then delete_member of the only member, at once: the leader that is left out
    # adds and promotes the new member first, hands it the leadership, and only then is removed.
    cluster = Cluster(3).start()
    try:
        declare(cluster, 1, "moved", size=1)
        bodies = [b"moved-%03d" % n for n in range(100)]
        publish(cluster, 1, "moved", bodies)
        cluster.hamqctl(1, "add_member", "moved", "n2")
        cluster.hamqctl(1, "delete_member", "moved", "n1")
        eventually(lambda: members(cluster, 2, "moved") == ["n2"], what="n2 the only member")
        eventually(lambda: voters_as_leader_sees(cluster, "moved") == ["n2"], timeout_s=20,
                   what="the group moved to n2")
        eventually(lambda: cluster.hamqctl_fails(1, "quorum_status", "moved"),
                   what="n1's replica gone")
        assert consume(cluster, 2, "moved", lambda got: len(got) == 100) == bodies
        # Its last member stays.
        code, err = cluster.hamqctl_fails(1, "delete_member", "moved", "n2")
        assert code == 70 and "last member" in err
    finally:
        cluster.stop()


def test_a_member_away_longer_than_the_repair_time_is_replaced():
    # --member-repair-after-seconds: a node unreachable that long loses its members to others,
    # as a forgotten node does (RabbitMQ's membership reconciliation, here with a time).
    cluster = Cluster(4)
    for node in cluster.nodes.values():
        node.args += ["--member-repair-after-seconds", "2"]
    cluster.start()
    try:
        declare(cluster, 1, "awaited", size=3)
        before = members(cluster, 1, "awaited")
        spare = next(n for n in ("n2", "n3", "n4") if n not in before)
        away = next(n for n in before if n != "n1")
        bodies = [b"awaited-%02d" % n for n in range(20)]
        publish(cluster, 1, "awaited", bodies)
        cluster.nodes[int(away[1:])].kill()
        wanted = sorted(set(before) - {away} | {spare})
        eventually(lambda: members(cluster, 1, "awaited") == wanted, timeout_s=20,
                   what="the member away replaced")
        eventually(lambda: voters_as_leader_sees(cluster, "awaited") == wanted, timeout_s=20,
                   what="the new member promoted and the one away removed")
        i = int(spare[1:])
        assert consume(cluster, i, "awaited", lambda got: len(got) == 20) == bodies
    finally:
        cluster.stop()
