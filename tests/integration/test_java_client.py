"""Messaging with the RabbitMQ Java client, and the seed scenario across pika and Java."""

import pathlib
import subprocess

import pika
import pytest

from hamq_server import HamqServer

CLIENTS = pathlib.Path(__file__).resolve().parents[1] / "clients"
CLASSPATH = ":".join(["/usr/share/java/amqp-client.jar", "/usr/share/java/slf4j-api.jar",
                      "/usr/share/java/slf4j-nop.jar"])


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
    out = tmp_path_factory.mktemp("java")
    sources = [str(CLIENTS / name)
               for name in ("DurableHello.java", "Messaging.java", "QueueFeatures.java")]
    compiled = subprocess.run(["javac", "-cp", CLASSPATH, "-d", str(out), *sources],
                              capture_output=True, text=True, timeout=120)
    assert compiled.returncode == 0, compiled.stderr
    return out


def java(classes, program, port, *args):
    return subprocess.run(["java", "-cp", f"{classes}:{CLASSPATH}", program, str(port), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("scenario", ["ttl", "expires", "max-length", "dead-letter",
                                      "delivery-limit", "priority", "single-active-consumer",
                                      "delayed", "bad-arguments"])
def test_queue_features_with_the_java_client(server, classes, scenario):
    result = java(classes, "QueueFeatures", server.port, scenario)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def test_confirms_consume_and_cancel_notification(server, classes):
    result = java(classes, "Messaging", server.port)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"


def test_seed_scenario_redeclaring_hello_as_durable_is_refused(server, classes):
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
    channel = connection.channel()
    channel.queue_declare(queue="hello")
    channel.basic_publish(exchange="", routing_key="hello", body="Hello World!")
    connection.close()

    result = java(classes, "DurableHello", server.port)
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'hello' in vhost '/': "
            "received 'true' but current is 'false'") in result.stdout


def test_seed_scenario_on_a_fresh_broker_succeeds(classes):
    fresh = HamqServer().start()
    try:
        result = java(classes, "DurableHello", fresh.port)
        assert result.returncode == 0, result.stdout + result.stderr
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", fresh.port))
        method, properties, body = connection.channel().basic_get("hello", auto_ack=True)
        assert body == b"Hello World!"
        assert properties.delivery_mode == 2
        connection.close()
    finally:
        assert fresh.stop() == 0


def test_seed_scenario_the_message_survives_a_sigkill(classes):
    broker = HamqServer().start()
    try:
        published = java(classes, "DurableHello", broker.port)
        assert published.returncode == 0, published.stdout + published.stderr
        broker.kill()
        broker.start()
        consumed = java(classes, "DurableHello", broker.port, "consume")
        assert consumed.returncode == 0, consumed.stdout + consumed.stderr
        assert consumed.stdout.strip() == "Hello World!"
        # Acknowledged, it is gone for good, across another SIGKILL too.
        broker.kill()
        broker.start()
        again = java(classes, "DurableHello", broker.port, "consume")
        assert again.returncode == 3, again.stdout + again.stderr
    finally:
        assert broker.stop() == 0
