"""Messages in durable queues survive a SIGKILL of the broker: what was confirmed is there after a
restart, in order; what a consumer acknowledged is gone; what it held unacknowledged comes back
marked redelivered."""

import collections
import pathlib
import re
import subprocess
import time

import pika
import pika.exceptions

from hamq_server import BIN_DIR
from pika_helpers import connect, exists, wait_until


def drain(channel, queue, limit=10_000):
    """Every message basic.get finds, acknowledged, as (body, redelivered)."""
    got = []
    while len(got) < limit:
        method, _, body = channel.basic_get(queue)
        if method is None:
            return got
        got.append((body, method.redelivered))
        channel.basic_ack(method.delivery_tag)
    return got


def test_confirmed_messages_survive_sigkill_in_order(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("orders", durable=True)
    channel.confirm_delivery()
    for i in range(500):
        channel.basic_publish("", "orders", b"order-%d" % i,
                              pika.BasicProperties(delivery_mode=2), mandatory=True)
    connection.close()

    server.kill()
    server.start()

    connection = connect(server)
    channel = connection.channel()
    assert channel.queue_declare("orders", passive=True).method.message_count == 500
    got = drain(channel, "orders")
    assert [body for body, _ in got] == [b"order-%d" % i for i in range(500)]
    assert not any(redelivered for _, redelivered in got)
    connection.close()


def test_acked_messages_are_gone_and_unacked_ones_come_back_redelivered(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("work", durable=True)
    channel.confirm_delivery()
    for i in range(10):
        channel.basic_publish("", "work", b"job-%d" % i)
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=10)
    delivered = []
    consumer.basic_consume("work", lambda ch, method, props, body: delivered.append(
        (method.delivery_tag, body)))
    wait_until(connection, lambda: len(delivered) == 10)
    for tag, body in delivered[:4]:
        consumer.basic_ack(tag)
    # A get on another channel waits for the acks to be applied first (its reply is in order
    # behind them on the log), so this also shows the acks are durable before the kill.
    assert channel.queue_declare("work", passive=True).method.message_count == 0
    connection.process_data_events(time_limit=0.2)

    server.kill()
    server.start()

    connection = connect(server)
    channel = connection.channel()
    got = drain(channel, "work")
    assert [body for body, _ in got] == [b"job-%d" % i for i in range(4, 10)]
    assert all(redelivered for _, redelivered in got)
    connection.close()


def test_get_purge_and_counts_on_a_durable_queue_survive_restarts(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("q", durable=True)
    for i in range(5):
        channel.basic_publish("", "q", b"m%d" % i)
    method, _, body = channel.basic_get("q", auto_ack=True)
    assert body == b"m0" and method.message_count == 4
    assert channel.queue_purge("q").method.message_count == 4
    channel.basic_publish("", "q", b"after purge")
    assert channel.queue_declare("q", passive=True).method.message_count == 1
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    assert [body for body, _ in drain(channel, "q")] == [b"after purge"]
    connection.close()


def test_a_deleted_durable_queue_does_not_come_back_with_its_messages(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("gone", durable=True)
    channel.confirm_delivery()
    channel.basic_publish("", "gone", b"old")
    channel.queue_delete("gone")
    channel.queue_declare("gone", durable=True)
    channel.basic_publish("", "gone", b"new")
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    assert [body for body, _ in drain(channel, "gone")] == [b"new"]
    channel.queue_delete("gone")
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    assert not exists(connection, "queue", "gone")
    connection.close()


def test_transactions_and_fanout_to_durable_and_transient_queues(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("fan", "fanout", durable=True)
    channel.queue_declare("kept", durable=True)
    channel.queue_declare("memory", durable=False)
    channel.queue_bind("kept", "fan")
    channel.queue_bind("memory", "fan")
    channel.tx_select()
    channel.basic_publish("fan", "", b"committed")
    channel.tx_commit()
    channel.basic_publish("fan", "", b"rolled back")
    channel.tx_rollback()
    assert channel.queue_declare("memory", passive=True).method.message_count == 1
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    assert [body for body, _ in drain(channel, "kept")] == [b"committed"]
    assert not exists(connection, "queue", "memory")
    connection.close()


def test_consumers_cancel_and_redeclare_on_a_durable_queue(server):
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("c", durable=True)
    for i in range(3):
        channel.basic_publish("", "c", b"%d" % i)
    got = []
    tag = channel.basic_consume("c", lambda ch, method, props, body: got.append(body),
                                auto_ack=True)
    wait_until(connection, lambda: len(got) == 3)
    channel.basic_cancel(tag)
    channel.basic_publish("", "c", b"after cancel")
    connection.process_data_events(time_limit=0.2)
    assert got == [b"0", b"1", b"2"]
    assert channel.queue_declare("c", durable=True).method.message_count == 1
    connection.close()


def test_a_backlog_of_many_replay_steps_comes_back_whole(server):
    # 48 MB: a restart replays it in several steps (each applies at most 8 MB of the log).
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("backlog", durable=True)
    body = b"x" * 1000
    for i in range(48_000):
        channel.basic_publish("", "backlog", body + b"%d" % i)
    assert channel.queue_declare("backlog", passive=True).method.message_count == 48_000
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    assert channel.queue_declare("backlog", passive=True).method.message_count == 48_000
    got = []
    channel.basic_consume("backlog", lambda ch, method, props, b: got.append(b), auto_ack=True)
    wait_until(connection, lambda: len(got) == 48_000)
    assert got == [body + b"%d" % i for i in range(48_000)]
    connection.close()


def wal_bytes(server):
    wal = pathlib.Path(server.data_dir.name) / "wal"
    return sum(f.stat().st_size for f in wal.iterdir() if f.is_file())


def oldest_segment_holders(server):
    """What keeps the log's oldest segment, for a failure message: its records per group and
    type, from hamq-dump, and the release records anywhere."""
    dump = subprocess.run([str(BIN_DIR / "hamq-dump"), str(pathlib.Path(server.data_dir.name) / "wal")],
                          capture_output=True, text=True, timeout=60).stdout.splitlines()
    segments = [line for line in dump if line.startswith("segment ")]
    held = collections.Counter()
    releases = []
    in_oldest = False
    for line in dump:
        if line.startswith("segment "):
            in_oldest = line == segments[0]
            continue
        record = re.search(r"record @\d+ (\S+) group=(\d+)", line)
        if record and record.group(1) == "release":
            releases.append(line.strip())
        elif record and in_oldest:
            held[(record.group(2), record.group(1))] += 1
    return "%d segments, the oldest: %s; release records: %s" % (
        len(segments), sorted(held.items()), releases[-3:])


def test_consumed_messages_give_their_disk_back_even_behind_an_old_unacked_one(server):
    connection = connect(server)
    holder = connection.channel()
    holder.queue_declare("stream", durable=True)
    holder.basic_publish("", "stream", b"old and unacked")
    method, _, body = holder.basic_get("stream")  # held, never acked, on this channel
    assert body == b"old and unacked"
    channel = connection.channel()
    received = []
    channel.basic_consume("stream", lambda ch, m, p, b: received.append(len(b)), auto_ack=True)
    body = b"y" * 65536
    for _ in range(4):  # 256 MB through the queue, 64 MB at a time
        expected = len(received) + 1024
        for _ in range(1024):
            channel.basic_publish("", "stream", body)
        wait_until(connection, lambda: len(received) == expected)
    # The queue snapshots what little is live (the old message) and its log is released; whole
    # segments of the node's log go (64 MB each, the newest still being written).
    deadline = time.monotonic() + 20
    while wal_bytes(server) > 160 * 1024 * 1024:
        assert time.monotonic() < deadline, "the log still holds %d bytes: %s" % (
            wal_bytes(server), sorted(p.name for p in (pathlib.Path(server.data_dir.name) / "wal").iterdir()))
        connection.process_data_events(time_limit=0.2)

    server.kill()  # the old message still held: closing would hand it to the auto-ack consumer
    server.start()
    connection = connect(server)
    channel = connection.channel()
    assert drain(channel, "stream") == [(b"old and unacked", True)]
    connection.close()


def test_a_standing_backlog_too_large_to_carry_still_gives_the_disk_back(server):
    # 16 MB always waiting, more than a snapshot carries with bodies (8 MB): the snapshot refers
    # to the log entries of the newer messages, which the log keeps, and the rest of the log
    # goes, behind an old unacknowledged message too.
    connection = connect(server)
    holder = connection.channel()
    holder.queue_declare("standing", durable=True)
    holder.basic_publish("", "standing", b"old and unacked")
    method, _, body = holder.basic_get("standing")
    assert body == b"old and unacked"
    channel = connection.channel()
    padding = b"z" * 65530
    published = 0
    consumed = 0
    for _ in range(256):
        channel.basic_publish("", "standing", b"%06d" % published + padding)
        published += 1
    for _ in range(4):  # 256 MB through the queue, the backlog standing at 256 messages
        for _ in range(1024):
            channel.basic_publish("", "standing", b"%06d" % published + padding)
            published += 1
        for _ in range(1024):
            method, _, got = channel.basic_get("standing", auto_ack=True)
            assert got[:6] == b"%06d" % consumed
            consumed += 1
    deadline = time.monotonic() + 20
    while wal_bytes(server) > 160 * 1024 * 1024:
        assert time.monotonic() < deadline, "the log still holds %d bytes: %s" % (
            wal_bytes(server), oldest_segment_holders(server))
        connection.process_data_events(time_limit=0.2)

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    got = drain(channel, "standing")
    assert got[0] == (b"old and unacked", True)
    assert [body[:6] for body, _ in got[1:]] == [b"%06d" % i for i in range(consumed, published)]
    connection.close()


def test_delayed_messages_of_a_durable_delayed_exchange_survive_sigkill(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare("later", "x-delayed-message", durable=True,
                             arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "later", "k")
    channel.confirm_delivery()
    for i, delay in enumerate([1500, 1000, 1200]):
        channel.basic_publish("later", "k", b"d%d" % i,
                              pika.BasicProperties(headers={"x-delay": delay}))
    assert channel.queue_declare("due", passive=True).method.message_count == 0  # not yet
    connection.close()

    server.kill()
    server.start()
    connection = connect(server)
    channel = connection.channel()
    got = []
    channel.basic_consume("due", lambda ch, m, p, b: got.append(b), auto_ack=True)
    wait_until(connection, lambda: len(got) == 3)
    assert got == [b"d1", b"d2", b"d0"]  # in the order they fell due
    connection.close()


def test_messages_moved_to_other_queues_arrive_once_across_restarts(server):
    # A rejected message moves to its dead-letter queue, a delayed one to its queue when due;
    # each leaves its first queue only once the second has it. The logs replayed at a restart do
    # not move them again.
    connection = connect(server)
    channel = connection.channel()
    channel.queue_declare("dead", durable=True)
    channel.queue_declare("work", durable=True, arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"})
    channel.exchange_declare("soon", "x-delayed-message", durable=True,
                             arguments={"x-delayed-type": "direct"})
    channel.queue_declare("due", durable=True)
    channel.queue_bind("due", "soon", "k")
    channel.confirm_delivery()
    for i in range(3):
        channel.basic_publish("", "work", b"w%d" % i, pika.BasicProperties(delivery_mode=2))
        channel.basic_publish("soon", "k", b"s%d" % i,
                              pika.BasicProperties(delivery_mode=2, headers={"x-delay": 100}))
    for _ in range(3):
        method, _, _ = channel.basic_get("work")
        channel.basic_reject(method.delivery_tag, requeue=False)
    wait_until(connection, lambda: channel.queue_declare("due", passive=True).method.message_count == 3)
    wait_until(connection, lambda: channel.queue_declare("dead", passive=True).method.message_count == 3)
    connection.close()

    # After the first restart each is there once; consumed, none comes back after the second.
    for dead, due in [([b"w0", b"w1", b"w2"], [b"s0", b"s1", b"s2"]), ([], [])]:
        server.kill()
        server.start()
        connection = connect(server)
        channel = connection.channel()
        assert [body for body, _ in drain(channel, "dead")] == dead
        assert [body for body, _ in drain(channel, "due")] == due
        assert channel.queue_declare("work", passive=True).method.message_count == 0
        connection.close()
