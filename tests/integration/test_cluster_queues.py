"""Durable queues replicated on three nodes (issue 15): a queue declared through one node has a
member on each, any member serves it (publishes and acks go to its leader, deliveries come from
the consumer's own replica), and a confirmed message outlives the leader killed with SIGKILL.

Runs in a network namespace of its own (tests/in_netns.sh): nodes on 127.0.0.11-13."""

import json
import threading
import time

import pika
import pika.exceptions
import pytest

from hamq_cluster import Cluster, eventually


@pytest.fixture
def cluster():
    cluster = Cluster(3).start()
    yield cluster
    cluster.stop()


def queue_row(cluster, i, name):
    rows = json.loads(cluster.hamqctl(i, "list_queues", "name", "leader", "members", "online",
                                      "messages", "--formatter", "json"))
    return next(row for row in rows if row["name"] == name)


def leader_of(cluster, name, among=(1, 2, 3)):
    """The node number that leads the queue's group, as every node in `among` sees it."""
    def agreed():
        leaders = {queue_row(cluster, i, name)["leader"] for i in among}
        return len(leaders) == 1 and None not in leaders and leaders.pop()
    return int(eventually(agreed, timeout_s=15, what="one leader for " + name)[1:])


def publish_confirmed(channel, queue, bodies):
    """Publishes each body with confirms; returns those confirmed (a nack, or a channel closed
    by the broker, leaves the rest unconfirmed)."""
    confirmed = []
    for body in bodies:
        try:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2),
                                  mandatory=True)
        except pika.exceptions.NackError:
            continue
        confirmed.append(body)
    return confirmed


def consume(cluster, i, queue, done, timeout_s=15):
    """Consumes through node i (acknowledging) until `done(bodies so far)`: the bodies in order.
    Fails if a message stops coming for timeout_s first."""
    connection = cluster.connect(i)
    channel = connection.channel()
    got = []
    for method, _, body in channel.consume(queue, inactivity_timeout=timeout_s):
        assert method is not None, "no message for %ss after %d" % (timeout_s, len(got))
        got.append(body)
        channel.basic_ack(method.delivery_tag)
        if done(got):
            break
    channel.cancel()
    connection.close()
    return got


def test_a_durable_queue_has_a_member_on_every_node_and_each_serves_it(cluster):
    connection = cluster.connect(1)
    connection.channel().queue_declare("orders", durable=True)
    connection.close()
    for i in (1, 2, 3):
        row = eventually(lambda: queue_row(cluster, i, "orders"), what="node %d lists it" % i)
        assert row["members"] == ["n1", "n2", "n3"]
    leader = leader_of(cluster, "orders")
    # Published through a node that does not lead it, consumed through the third.
    publisher_node = next(i for i in (1, 2, 3) if i != leader)
    consumer_node = next(i for i in (1, 2, 3) if i not in (leader, publisher_node))
    connection = cluster.connect(publisher_node)
    channel = connection.channel()
    channel.confirm_delivery()
    bodies = [b"order-%03d" % n for n in range(100)]
    assert publish_confirmed(channel, "orders", bodies) == bodies
    connection.close()
    # Every replica has them.
    for i in (1, 2, 3):
        eventually(lambda: queue_row(cluster, i, "orders")["messages"] == 100,
                   what="node %d's replica holds the 100 messages" % i)
    assert consume(cluster, consumer_node, "orders", lambda got: len(got) == 100) == bodies
    # The acks went to the leader: every replica is empty.
    for i in (1, 2, 3):
        eventually(lambda: queue_row(cluster, i, "orders")["messages"] == 0,
                   what="node %d's replica is empty" % i)


def test_confirmed_messages_outlive_the_leader_killed_with_sigkill(cluster):
    connection = cluster.connect(1)
    channel = connection.channel()
    channel.queue_declare("payments", durable=True)
    connection.close()
    leader = leader_of(cluster, "payments")
    survivors = [i for i in (1, 2, 3) if i != leader]
    connection = cluster.connect(survivors[0])
    channel = connection.channel()
    channel.confirm_delivery()
    confirmed = publish_confirmed(channel, "payments", [b"before-%03d" % n for n in range(100)])
    assert len(confirmed) == 100
    cluster.nodes[leader].kill()
    # The two left elect a leader among them; publishing through a survivor goes on (a publish
    # in flight to the dead leader is nacked, and sent again here).
    pending = [b"after-%03d" % n for n in range(100)]

    def publish_rest():
        pending[:] = [b for b in pending if b not in publish_confirmed(channel, "payments", pending)]
        return not pending

    eventually(publish_rest, timeout_s=20, what="publishing through a survivor")
    connection.close()
    after = [b"after-%03d" % n for n in range(100)]
    got = consume(cluster, survivors[1], "payments",
                  lambda got: set(confirmed + after) <= set(got))
    # Nothing confirmed is missing, in order; a nacked publish sent again may be there twice.
    assert [b for b in got if b.startswith(b"before")] == confirmed
    assert sorted(set(b for b in got if b.startswith(b"after"))) == after


class Publisher(threading.Thread):
    """Publishes numbered persistent messages through node i, one at a time with confirms, until
    stopped; keeps what was confirmed, in order, and the first error (a nack, a closed channel)."""

    def __init__(self, cluster, i, queue):
        super().__init__(daemon=True)
        self.connection = cluster.connect(i)
        self.channel = self.connection.channel()
        self.channel.confirm_delivery()
        self.queue = queue
        self.confirmed = []
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        n = 0
        try:
            while not self.stopping.is_set():
                body = b"m-%06d" % n
                self.channel.basic_publish("", self.queue, body,
                                           pika.BasicProperties(delivery_mode=2), mandatory=True)
                self.confirmed.append(body)
                n += 1
        except Exception as error:  # noqa: BLE001 (the test reports whatever it was)
            self.error = repr(error)

    def stop(self):
        self.stopping.set()
        self.join(30)
        assert not self.is_alive(), "the publisher is stuck"
        self.connection.close()


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_a_publisher_on_a_survivor_sees_a_pause_not_an_error_when_the_leader_fails(cluster, fault):
    """The leader is killed (SIGKILL) or hangs (SIGSTOP) while a publisher on another node has a
    publish in flight to it: the publish is sent again to the new leader and applied once, the
    publisher sees no nack and no error, and every confirmed message is there once, in order."""
    connection = cluster.connect(1)
    connection.channel().queue_declare("ledger", durable=True)
    connection.close()
    leader = leader_of(cluster, "ledger")
    survivors = [i for i in (1, 2, 3) if i != leader]
    publisher = Publisher(cluster, survivors[0], "ledger")
    publisher.start()
    eventually(lambda: len(publisher.confirmed) >= 300 or publisher.error,
               what="300 confirms before the fault")
    assert leader_of(cluster, "ledger") == leader, "the leader moved before the fault"
    if fault == "kill":
        cluster.nodes[leader].kill()
    else:
        cluster.nodes[leader].pause()
    at_fault = len(publisher.confirmed)
    eventually(lambda: len(publisher.confirmed) >= at_fault + 300 or publisher.error,
               timeout_s=20, what="300 confirms after the fault")
    publisher.stop()
    assert publisher.error is None, publisher.error
    confirmed = publisher.confirmed
    got = consume(cluster, survivors[1], "ledger", lambda got: len(got) >= len(confirmed))
    assert got == confirmed
    connection = cluster.connect(survivors[1])
    method, _, _ = connection.channel().basic_get("ledger", auto_ack=True)
    assert method is None, "a message more than was confirmed"
    connection.close()
    if fault == "pause":
        cluster.nodes[leader].resume()


def test_a_member_killed_and_restarted_catches_up_and_serves_again(cluster):
    connection = cluster.connect(1)
    connection.channel().queue_declare("audit", durable=True)
    connection.close()
    leader = leader_of(cluster, "audit")
    follower = next(i for i in (1, 2, 3) if i != leader)
    other = next(i for i in (1, 2, 3) if i not in (leader, follower))
    cluster.nodes[follower].kill()
    # The leader and the other member are a majority: confirms go on without the killed one.
    connection = cluster.connect(other)
    channel = connection.channel()
    channel.confirm_delivery()
    bodies = [b"entry-%03d" % n for n in range(50)]
    assert publish_confirmed(channel, "audit", bodies) == bodies
    connection.close()
    cluster.nodes[follower].start()
    # Its replica learns what it missed from the leader, and serves it.
    eventually(lambda: queue_row(cluster, follower, "audit")["messages"] == 50, timeout_s=20,
               what="the restarted member catches up")
    assert consume(cluster, follower, "audit", lambda got: len(got) == 50) == bodies


def test_a_member_far_behind_a_large_queue_gets_every_body_in_the_leaders_snapshot():
    # Snapshots of a large queue refer to the entries of the node's own log that hold its newest
    # messages (small limits here make every snapshot do so); a member that missed more than the
    # leader's log still holds is sent the snapshot with those bodies in it, and serves them.
    cluster = Cluster(3)
    for node in cluster.nodes.values():
        node.args += ["--queue-snapshot-log-bytes", "65536",
                      "--queue-snapshot-carried-bytes", "16384"]
    cluster.start()
    try:
        connection = cluster.connect(1)
        connection.channel().queue_declare("ledger", durable=True)
        connection.close()
        leader = leader_of(cluster, "ledger")
        behind = next(i for i in (1, 2, 3) if i != leader)
        other = next(i for i in (1, 2, 3) if i not in (leader, behind))
        cluster.nodes[behind].kill()
        connection = cluster.connect(other)
        channel = connection.channel()
        channel.confirm_delivery()
        bodies = [(b"%04d-" % n) + bytes([97 + n % 26]) * 1000 for n in range(600)]
        assert publish_confirmed(channel, "ledger", bodies) == bodies
        connection.close()
        cluster.nodes[behind].start()
        eventually(lambda: queue_row(cluster, behind, "ledger")["messages"] == 600, timeout_s=30,
                   what="the member far behind catches up")
        # Deliveries to a consumer come from its own node's replica.
        assert consume(cluster, behind, "ledger", lambda got: len(got) == 600) == bodies
    finally:
        cluster.stop()


def test_a_publish_right_after_the_declare_waits_for_the_new_group_to_elect(cluster):
    # As an unmodified application does: declare, then publish at once; the group was founded a
    # moment ago and may have no leader yet. Each publish waits for one rather than fail.
    for i in (1, 2, 3):
        connection = cluster.connect(i)
        channel = connection.channel()
        channel.confirm_delivery()
        name = "fresh-%d" % i
        channel.queue_declare(name, durable=True)
        bodies = [b"first-%d" % n for n in range(20)]
        assert publish_confirmed(channel, name, bodies) == bodies
        connection.close()
        other = i % 3 + 1
        assert consume(cluster, other, name, lambda got: len(got) == 20) == bodies


def test_a_smaller_group_goes_to_the_declaring_node_and_the_least_loaded(cluster):
    connection = cluster.connect(3)
    channel = connection.channel()
    two = {"x-quorum-initial-group-size": 2}
    channel.queue_declare("pair-a", durable=True, arguments=two)
    channel.queue_declare("pair-b", durable=True, arguments=two)
    connection.close()
    # Node 3 declared both; pair-a's other member is the lowest id of the equally loaded, pair-b's
    # the one pair-a did not take.
    assert eventually(lambda: queue_row(cluster, 1, "pair-a"))["members"] == ["n1", "n3"]
    assert eventually(lambda: queue_row(cluster, 1, "pair-b"))["members"] == ["n2", "n3"]
    # Every node places alike; a node without a member knows where it lives, not its counts.
    for i in (2, 3):
        assert eventually(lambda: queue_row(cluster, i, "pair-b"))["members"] == ["n2", "n3"]
    assert queue_row(cluster, 1, "pair-b")["messages"] is None
    assert queue_row(cluster, 2, "pair-b")["messages"] == 0


def declare_and_fill(cluster, queue, bodies, through=1):
    """Declares a durable queue through a node and publishes `bodies` to it, all confirmed."""
    connection = cluster.connect(through)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.confirm_delivery()
    assert publish_confirmed(channel, queue, bodies) == bodies
    connection.close()


def hold_unacked(cluster, i, queue, count):
    """A consumer through node i takes `count` messages and acknowledges none; its connection
    (returned) stays open."""
    consumer = cluster.connect(i)
    channel = consumer.channel()
    channel.basic_qos(prefetch_count=count)
    taken = []
    for method, _, body in channel.consume(queue, inactivity_timeout=15):
        assert method is not None, "no delivery after %d" % len(taken)
        taken.append(body)
        if len(taken) == count:
            break
    return consumer, taken


def consume_redelivered(cluster, i, queue, count, timeout_s):
    """Consumes `count` messages through node i, acknowledging them: (body, redelivered) each."""
    connection = cluster.connect(i)
    channel = connection.channel()
    got = []
    for method, _, body in channel.consume(queue, inactivity_timeout=timeout_s):
        assert method is not None, "no delivery after %d" % len(got)
        got.append((body, method.redelivered))
        channel.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    connection.close()
    return got


def test_what_a_killed_nodes_consumer_held_comes_back_redelivered_when_it_restarts(cluster):
    bodies = [b"held-%d" % n for n in range(10)]
    declare_and_fill(cluster, "held", bodies)
    # A consumer on node 2 takes all ten and acknowledges none; then node 2 dies.
    _, taken = hold_unacked(cluster, 2, "held", 10)
    assert taken == bodies
    cluster.nodes[2].kill()
    cluster.nodes[2].start()
    # Its previous life's consumer is detached once its replica caught up: the messages are ready
    # again, redelivered, and a consumer through the restarted node gets them.
    got = consume_redelivered(cluster, 2, "held", 10, timeout_s=20)
    assert sorted(got) == sorted((body, True) for body in bodies)


def test_what_a_dead_nodes_consumer_held_comes_back_redelivered_through_the_others(cluster):
    bodies = [b"orphan-%d" % n for n in range(10)]
    declare_and_fill(cluster, "orphaned", bodies)
    hold_unacked(cluster, 3, "orphaned", 10)
    cluster.nodes[3].kill()  # and it stays down
    # Once the others count node 3 gone (its link down for 5 s), the queue's leader gives back
    # what its consumer held: a consumer through node 2 gets it all, redelivered.
    got = consume_redelivered(cluster, 2, "orphaned", 10, timeout_s=30)
    assert sorted(got) == sorted((body, True) for body in bodies)


def test_a_consumer_of_a_node_cut_off_for_long_is_cancelled_and_told(cluster):
    declare_and_fill(cluster, "partitioned", [b"p-%d" % n for n in range(5)])
    # The consumer's client stays connected to node 3 (from 127.0.0.1) while node 3 is cut off
    # from the other nodes.
    consumer = cluster.connect(3)
    consumer_channel = consumer.channel()
    cancelled = []
    consumer_channel.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    taken = []
    consumer_channel.basic_consume("partitioned", lambda ch, m, p, body: taken.append(body))
    eventually(lambda: consumer.process_data_events(time_limit=0.1) or len(taken) == 5,
               what="the consumer on node 3 takes the five messages")
    cluster.cut(3, [1, 2])
    try:
        # The majority counts node 3 gone and gives its consumer's messages back.
        got = consume_redelivered(cluster, 2, "partitioned", 5, timeout_s=30)
        assert [redelivered for _, redelivered in got] == [True] * 5
    finally:
        cluster.heal()
    # Node 3 learns that its consumer was cancelled, and tells the client.
    eventually(lambda: consumer.process_data_events(time_limit=0.1) or cancelled, timeout_s=20,
               what="basic.cancel from node 3")
    consumer.close()


def balanced(cluster, nodes, through=1):
    """True when the replicated queues' leaders are spread over `nodes` (node numbers), each
    leading its share (the counts differ by one at most; the vhost's parking queue counts too)."""
    rows = json.loads(cluster.hamqctl(through, "list_queues", "name", "leader", "members",
                                      "--formatter", "json"))
    counts = {"n%d" % i: 0 for i in nodes}
    for row in rows:
        if len(row["members"]) > 1:
            if row["leader"] not in counts:
                return False
            counts[row["leader"]] += 1
    return max(counts.values()) - min(counts.values()) <= 1


def test_leaders_spread_over_the_nodes_and_again_when_a_node_comes_back(cluster):
    # Declared through one node, which stands for each group's first election: the leaders move
    # until each node leads its share.
    names = ["spread-%d" % n for n in range(6)]
    connection = cluster.connect(1)
    channel = connection.channel()
    for name in names:
        channel.queue_declare(name, durable=True)
    connection.close()
    eventually(lambda: balanced(cluster, (1, 2, 3)), timeout_s=20, what="leaders spread")
    # hamqctl rebalance (as rabbitmq-queues rebalance): nothing to move now; it reports the
    # leaders per node as list_queues shows them.
    done = json.loads(cluster.hamqctl(1, "--formatter", "json", "rebalance", "all"))
    rows = json.loads(cluster.hamqctl(1, "list_queues", "name", "leader", "members",
                                      "--formatter", "json"))
    expected = {"n1": 0, "n2": 0, "n3": 0}
    for row in rows:
        if len(row["members"]) > 1:
            expected[row["leader"]] += 1
    assert done["moved"] == 0 and done["leaders"] == expected
    assert "Number of quorum queue leaders" in cluster.hamqctl(1, "rebalance", "quorum")
    cluster.nodes[2].kill()
    eventually(lambda: balanced(cluster, (1, 3)), timeout_s=20,
               what="the two nodes left share the leaders")
    cluster.nodes[2].start()
    # The node that came back leads its share again, without an operator.
    eventually(lambda: balanced(cluster, (1, 2, 3)), timeout_s=30,
               what="leaders spread again after the restart")
    # Publishing goes on through the moves: confirmed, none lost.
    connection = cluster.connect(3)
    channel = connection.channel()
    channel.confirm_delivery()
    for name in names:
        assert publish_confirmed(channel, name, [b"after"]) == [b"after"]
    connection.close()


def test_a_node_is_quorum_critical_while_a_queue_it_holds_has_no_member_to_spare(cluster):
    connection = cluster.connect(1)
    connection.channel().queue_declare("critical", durable=True)
    connection.close()
    leader_of(cluster, "critical")
    assert "no quorum queues with minimum quorum" in cluster.hamqctl(
        1, "check_if_node_is_quorum_critical")
    cluster.nodes[3].kill()
    eventually(lambda: "n3" not in json.loads(
        cluster.hamqctl(1, "cluster_status", "--formatter", "json"))["running_nodes"],
        what="n1 to see n3 stopped")
    # Two of three members run: stopping n1 would leave one, no majority.
    code, _ = cluster.hamqctl_fails(1, "check_if_node_is_quorum_critical")
    assert code == 69
    out = json.loads(subprocess_out(cluster, 1, "--formatter", "json",
                                    "check_if_node_is_quorum_critical"))
    assert out["status"] == "failed"
    assert "critical" in [q["name"] for q in out["queues"]]  # (hamq.parked too: replicated)
    cluster.nodes[3].start()
    eventually(lambda: "no quorum queues" in subprocess_out(cluster, 1,
                                                             "check_if_node_is_quorum_critical"),
               timeout_s=20, what="n1 to be no longer critical once n3 is back")


def subprocess_out(cluster, i, *args):
    """hamqctl's output against node i, whatever its exit code."""
    import subprocess
    from hamq_cluster import address, MANAGEMENT_PORT
    from hamq_server import BIN_DIR
    return subprocess.run([str(BIN_DIR / "hamqctl"), "-n", "%s:%d" % (address(i), MANAGEMENT_PORT),
                           *args], capture_output=True, text=True, timeout=30).stdout


def test_a_message_sent_again_after_a_failover_is_taken_once_with_deduplication(cluster):
    """x-message-deduplication: a publisher that sends a message again after its node or the
    queue's leader failed (it cannot know whether the first copy was taken) finds it taken once;
    the window is replicated state, so it holds across the failover."""
    connection = cluster.connect(1)
    connection.channel().queue_declare("orders-once", durable=True,
                                       arguments={"x-message-deduplication": 60000})
    connection.close()
    leader = leader_of(cluster, "orders-once")
    survivors = [i for i in (1, 2, 3) if i != leader]
    connection = cluster.connect(leader)
    channel = connection.channel()
    channel.confirm_delivery()
    for n in range(3):
        channel.basic_publish("", "orders-once", b"order %d" % n,
                              pika.BasicProperties(delivery_mode=2, message_id="order-%d" % n))
    connection.close()
    cluster.nodes[leader].kill()
    connection = cluster.connect(survivors[0])
    channel = connection.channel()
    channel.confirm_delivery()
    # Sent again, all three, and a new one: confirmed, and only the new one goes in.
    for n in range(4):
        channel.basic_publish("", "orders-once", b"order %d" % n,
                              pika.BasicProperties(delivery_mode=2, message_id="order-%d" % n))
    connection.close()
    got = consume(cluster, survivors[1], "orders-once", lambda got: len(got) >= 4)
    assert got == [b"order %d" % n for n in range(4)]
    connection = cluster.connect(survivors[1])
    method, _, _ = connection.channel().basic_get("orders-once", auto_ack=True)
    assert method is None, "a duplicate went in"
    connection.close()


def wipe(node):
    """Empties the node's data directory (its process stopped): a new disk."""
    import os
    import shutil
    data_dir = node.args[node.args.index("--data-dir") + 1]
    shutil.rmtree(data_dir)
    os.makedirs(data_dir)


def test_a_member_back_with_a_wiped_disk_never_helps_elect_a_leader_missing_what_it_held(
        cluster):
    cluster.connect(1).channel().queue_declare("wiped", durable=True)
    leader = leader_of(cluster, "wiped")
    behind, wiped = [i for i in (1, 2, 3) if i != leader]
    first = [b"wiped-%02d" % n for n in range(20)]
    connection = cluster.connect(leader)
    channel = connection.channel()
    channel.confirm_delivery()
    assert publish_confirmed(channel, "wiped", first) == first
    eventually(lambda: queue_row(cluster, behind, "wiped")["messages"] == 20,
               what="every member holds the first twenty")
    # One member is cut off: the next fifty are committed by the leader and the other alone.
    cluster.cut(behind, [leader, wiped])
    later = [b"later-%02d" % n for n in range(50)]
    assert publish_confirmed(channel, "wiped", later) == later
    connection.close()
    # The leader dies, and the other loses its disk: the member that was cut off (without the
    # fifty) and the wiped one (with nothing) are a majority by count, but the wiped one must not
    # vote for a log that lacks what it had acknowledged.
    cluster.nodes[leader].kill()
    cluster.nodes[wiped].kill()
    wipe(cluster.nodes[wiped])
    cluster.heal()
    cluster.nodes[wiped].start()
    # Once the wiped node has the queue's group again (from the metadata it caught up on), a
    # leader could be elected by the two within an election timeout if it voted. The old leader
    # comes back: it is elected, the wiped member catches up, and every confirmed message is
    # there, in order.
    eventually(lambda: queue_row(cluster, wiped, "wiped"), what="the wiped node lists the queue")
    # It restarts once more before it heard from any leader of the group: its log is no longer
    # empty, and it still comes back catching up (its joining was recorded), not as a founder.
    cluster.nodes[wiped].kill()
    cluster.nodes[wiped].start()
    eventually(lambda: queue_row(cluster, wiped, "wiped"), what="the wiped node lists the queue")
    cluster.nodes[leader].start()
    assert consume(cluster, behind, "wiped", lambda got: len(got) == 70, timeout_s=20) == \
        first + later
    eventually(lambda: queue_row(cluster, wiped, "wiped")["messages"] == 0,
               what="the wiped member caught up")


def test_confirmed_delayed_messages_outlive_the_node_they_were_published_through(cluster):
    """A durable delayed exchange keeps its delayed messages in a replicated group of their own:
    confirmed through a node that is then killed (SIGKILL), they are routed when their time
    comes, not before."""
    connection = cluster.connect(1)
    channel = connection.channel()
    channel.exchange_declare("later", "x-delayed-message", durable=True,
                             arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "later", routing_key="due")
    connection.close()

    def known_on_2():
        connection = cluster.connect(2)
        try:
            connection.channel().exchange_declare("later", passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if connection.is_open:
                connection.close()
    eventually(known_on_2, what="node 2 knows the exchange")
    connection = cluster.connect(2)
    channel = connection.channel()
    channel.confirm_delivery()
    bodies = [b"delayed-%02d" % n for n in range(20)]
    started = time.monotonic()
    for body in bodies:
        channel.basic_publish("later", "due", body,
                              pika.BasicProperties(delivery_mode=2, headers={"x-delay": 2000}))
    cluster.nodes[2].kill()
    first_at = []
    got = consume(cluster, 3, "due",
                  lambda got: first_at.append(time.monotonic()) or set(bodies) <= set(got),
                  timeout_s=20)
    assert sorted(set(got)) == bodies
    assert first_at[0] - started >= 1.9
