#!/usr/bin/env python3
"""Writes the seed corpora of the fuzzers in fuzz/corpus/ from frames pika encodes.

The seeds are checked in; rerun this only to change them. Needs Debian's python3-pika:
  /usr/bin/python3 tools/make_fuzz_corpus.py
"""

import os
import pathlib
import struct

import pika.data
import pika.frame
import pika.spec

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fuzz" / "corpus"

TABLE = {
    "bool": True, "int": 7, "long": 2**40, "text": "hello",
    "nested": {"x-death": [{"count": 1, "reason": "expired"}]}, "list": [1, "a", False],
    "bytes": b"\x00\x01", "none": None,
}


def method_frames(channel=1):
    methods = [
        pika.spec.Channel.Open(),
        pika.spec.Exchange.Declare(exchange="ex", type="topic", durable=True,
                                   arguments={"alternate-exchange": "ae"}),
        pika.spec.Queue.Declare(queue="q", durable=True, arguments={"x-message-ttl": 1000,
                                                                    "x-queue-type": "quorum"}),
        pika.spec.Queue.Bind(queue="q", exchange="ex", routing_key="a.*.#", arguments=TABLE),
        pika.spec.Basic.Qos(prefetch_count=100),
        pika.spec.Basic.Consume(queue="q", consumer_tag="c1", arguments={"x-priority": 5}),
        pika.spec.Basic.Ack(delivery_tag=42, multiple=True),
        pika.spec.Basic.Nack(delivery_tag=7, requeue=True),
        pika.spec.Confirm.Select(),
        pika.spec.Tx.Select(),
        pika.spec.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0),
    ]
    return [pika.frame.Method(channel, m).marshal() for m in methods]


def publish_frames(channel=1, body=b"hello world"):
    properties = pika.spec.BasicProperties(
        content_type="text/plain", headers=TABLE, delivery_mode=2, priority=3,
        correlation_id="c", reply_to="r", expiration="1000", message_id="m", timestamp=1,
        type="t", user_id="guest", app_id="a")
    return [pika.frame.Method(channel, pika.spec.Basic.Publish(exchange="ex",
                                                               routing_key="a.b")).marshal(),
            pika.frame.Header(channel, len(body), properties).marshal(),
            pika.frame.Body(channel, body).marshal()]


def write(target, name, data):
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def main():
    frames = method_frames() + publish_frames() + [pika.frame.Heartbeat().marshal()]
    for index, frame in enumerate(frames):
        write("frame_fuzzer", f"frame-{index:02d}", bytes([7]) + frame)
    write("frame_fuzzer", "stream", bytes([13]) + b"".join(frames))

    pieces = []
    pika.data.encode_table(pieces, TABLE)
    write("field_table_fuzzer", "every-type", b"".join(pieces))
    write("field_table_fuzzer", "empty", struct.pack(">I", 0))

    session = b"".join(method_frames() + publish_frames())
    write("connection_fuzzer", "session", bytes([1, 40]) + session)
    write("connection_fuzzer", "bytewise", bytes([1, 0]) + session)
    start_ok = pika.frame.Method(0, pika.spec.Connection.StartOk(
        client_properties={"capabilities": {"authentication_failure_close": True}},
        response=b"\0guest\0guest")).marshal()
    raw = (b"AMQP\x00\x00\x09\x01" + start_ok +
           pika.frame.Method(0, pika.spec.Connection.TuneOk(2047, 131072, 60)).marshal() +
           pika.frame.Method(0, pika.spec.Connection.Open("/")).marshal())
    write("connection_fuzzer", "handshake", bytes([0, 30]) + raw)
    write("connection_fuzzer", "close", bytes([1, 100]) + pika.frame.Method(
        0, pika.spec.Connection.Close(200, "bye", 0, 0)).marshal())


if __name__ == "__main__":
    os.umask(0o022)
    main()
