"""The fault harness's checker (chaos.check) on small histories written by hand: each anomaly it
must report, and the histories it must accept."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from chaos import DELAYED, EXPIRE, LATER, check, unrebuilt  # noqa: E402


def publish(t, message, queue="q"):
    return {"t": t, "client": message.split(".")[0], "op": "publish", "id": message, "queue": queue}


def outcome(t, message, op="confirm"):
    return {"t": t, "client": message.split(".")[0], "op": op, "id": message}


def deliver(t, message, queue="q", client="c0", session=1, redelivered=False):
    return {"t": t, "client": client, "op": "deliver", "id": message, "queue": queue,
            "session": session, "redelivered": redelivered}


def ack(t, message, client="c0"):
    return {"t": t, "client": client, "op": "ack", "id": message}


def test_a_clean_history_has_no_anomalies():
    events = [publish(0, "p.1.0"), outcome(1, "p.1.0"), publish(1, "p.1.1"), outcome(2, "p.1.1"),
              deliver(3, "p.1.0"), ack(3, "p.1.0"), deliver(4, "p.1.1"), ack(4, "p.1.1")]
    report = check(events, end_of_faults=10)
    assert report["confirmed"] == 2
    assert not (report["lost"] or report["unexpected"] or report["duplicated"]
                or report["reordered"])
    assert report["longest_without_confirm_s"] == 1


def test_a_confirmed_message_never_acknowledged_is_lost():
    events = [publish(0, "p.1.0"), outcome(1, "p.1.0"), deliver(2, "p.1.0")]
    assert check(events, 10)["lost"] == ["p.1.0"]
    # Acknowledged later (say by the drain), it is not.
    assert check(events + [deliver(3, "p.1.0", redelivered=True), ack(3, "p.1.0")], 10)["lost"] == []
    # An ack whose connection broke as it went may have been applied: not lost.
    maybe = events + [{"t": 3, "client": "c0", "op": "ack-unknown", "id": "p.1.0"}]
    report = check(maybe, 10)
    assert report["lost"] == [] and report["ack_unknown"] == 1
    # An undetermined or nacked publish may be missing.
    events = [publish(0, "p.1.0"), publish(1, "p.1.1"), outcome(2, "p.1.1", "nack")]
    report = check(events, 10)
    assert report["lost"] == [] and report["undetermined"] == 1 and report["nacked"] == 1


def test_a_message_never_published_is_unexpected():
    assert check([deliver(1, "x.1.0"), ack(1, "x.1.0")], 10)["unexpected"] == ["x.1.0"]


def test_a_second_delivery_without_the_redelivered_flag_is_a_duplicate():
    base = [publish(0, "p.1.0"), outcome(1, "p.1.0"), deliver(2, "p.1.0")]
    assert check(base + [deliver(3, "p.1.0", client="c1")], 10)["duplicated"] == ["p.1.0 in q"]
    assert check(base + [deliver(3, "p.1.0", client="c1", redelivered=True)], 10)["duplicated"] == []
    # A dead letter's first delivery from its dead-letter queue is not a duplicate.
    assert check(base + [deliver(3, "p.1.0", queue="dead")], 10)["duplicated"] == []
    assert check(base + [deliver(3, "p.1.0", queue="dead"), deliver(4, "p.1.0", queue="dead")],
                 10)["duplicated"] == ["p.1.0 in dead"]


def test_one_publishers_messages_out_of_order_to_one_consumer_are_reordered():
    events = [publish(0, "p.1.0"), publish(1, "p.1.1"), deliver(2, "p.1.1"), deliver(3, "p.1.0")]
    assert check(events, 10)["reordered"] == ["p.1.0 after p.1.1"]
    # Not when the earlier one comes redelivered, or to another consumer, or from another
    # connection of the publisher, or out of the dead-letter queue.
    assert check(events[:3] + [deliver(3, "p.1.0", redelivered=True)], 10)["reordered"] == []
    assert check(events[:3] + [deliver(3, "p.1.0", client="c1")], 10)["reordered"] == []
    other = [publish(0, "p.2.0"), publish(1, "p.1.5"), deliver(2, "p.1.5"), deliver(3, "p.2.0")]
    assert check(other, 10)["reordered"] == []
    dead = [publish(0, "p.1.0"), publish(1, "p.1.1"), deliver(2, "p.1.1", queue="dead"),
            deliver(3, "p.1.0", queue="dead")]
    assert check(dead, 10)["reordered"] == []


def test_availability_is_the_longest_wait_for_a_confirm_per_queue_while_faults_go_on():
    events = [publish(0, "p.1.0"), outcome(1, "p.1.0"), publish(0, "p.1.1", queue="r"),
              outcome(1.5, "p.1.1"), publish(2, "p.1.2"), outcome(4, "p.1.2"),
              publish(4, "p.1.3", queue="r"), outcome(4.5, "p.1.3"), publish(5, "p.1.4"),
              outcome(20, "p.1.4")]
    report = check(events, end_of_faults=10)
    assert report["longest_without_confirm_s"] == 3  # q: 1 -> 4; 20 is after the faults
    assert report["not_confirmed_share"] == 0


def test_a_damaged_replica_counts_as_rebuilt_only_once_its_node_says_so():
    found = ("2026-12-08 00:09:10.152 [error] group 7 of the write-ahead log is damaged and was not "
             "started (it is rebuilt from its other members, if it has some): segment ...\n")
    rebuilt = ("2026-12-08 00:09:10.980 [warning] group 7: its damaged log here is dropped; the "
               "member joins again and takes its state from the other members\n")
    running = ("2026-12-08 00:09:12.001 [error] group 9: a record of its log on this node is "
               "damaged (...); its member here stopped\n")
    assert unrebuilt(found) == [7]
    assert unrebuilt(found + rebuilt) == []
    assert unrebuilt(found + rebuilt + found) == [7]  # found again at a later start
    assert unrebuilt(found + rebuilt + running) == [9]
    assert unrebuilt("") == []


def test_a_message_the_drain_finds_in_the_ttl_queue_did_not_expire():
    events = [publish(0, "p.1.0", EXPIRE), outcome(1, "p.1.0"), deliver(9, "p.1.0", EXPIRE),
              ack(9, "p.1.0"), publish(2, "p.1.1", EXPIRE), outcome(3, "p.1.1"),
              deliver(4, "p.1.1", "chaos-dead"), ack(4, "p.1.1")]
    assert check(events, 10)["not_expired"] == ["p.1.0"]


def test_a_message_to_the_ttl_queue_while_a_clock_was_moved_may_stay():
    clock = {"client": "nemesis", "kind": "clock"}
    events = [dict(clock, t=1, op="fault"), publish(2, "p.1.0", EXPIRE), outcome(3, "p.1.0"),
              dict(clock, t=4, op="heal"), publish(5, "p.1.1", EXPIRE), outcome(6, "p.1.1"),
              deliver(9, "p.1.0", EXPIRE), ack(9, "p.1.0"), deliver(9, "p.1.1", EXPIRE),
              ack(9, "p.1.1")]
    assert check(events, 10)["not_expired"] == ["p.1.1"]


def test_a_delayed_message_delivered_before_its_delay_is_early():
    def delayed(t, message, delay_ms):
        return dict(publish(t, message, DELAYED), delay_ms=delay_ms)
    events = [delayed(0, "p.1.0", 1000), outcome(0.1, "p.1.0"), delayed(1, "p.1.1", 500),
              outcome(1.1, "p.1.1"), deliver(0.9, "p.1.0", LATER), ack(0.9, "p.1.0"),
              deliver(1.6, "p.1.1", LATER), ack(1.6, "p.1.1")]
    report = check(events, 10)
    assert report["early"] == ["p.1.0"]
    assert not report["reordered"]  # (they may come in another order than sent)
    clock = {"client": "nemesis", "kind": "clock"}
    assert not check([dict(clock, t=0.5, op="fault"), dict(clock, t=2, op="heal")] + events,
                     10)["early"]


def test_a_delayed_message_sent_while_a_clock_was_moved_is_held_not_lost():
    clock = {"client": "nemesis", "kind": "clock"}
    events = [dict(publish(0, "p.1.0", DELAYED), delay_ms=500), outcome(0.1, "p.1.0"),
              dict(clock, t=1, op="fault"), dict(publish(2, "p.1.1", DELAYED), delay_ms=500),
              outcome(2.1, "p.1.1"), dict(clock, t=3, op="heal")]
    report = check(events, 10)
    assert report["lost"] == ["p.1.0"]
    assert report["held_by_clock"] == 1
