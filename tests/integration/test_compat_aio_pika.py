"""Where aio-pika and aiormq (Debian's 8.2.5 and 6.4.2) once saw hamq differ from RabbitMQ 3.10.8
(issue 13; docs/compatibility.md). Each test runs the client's own API the way an application
does, and checks what RabbitMQ answers."""

import asyncio
import random
import time

import aio_pika
import aio_pika.exceptions
import aio_pika.patterns
import aiormq
import aiormq.exceptions
import pytest

TIMEOUT_S = 30


def url(port):
    return f"amqp://guest:guest@127.0.0.1:{port}/"


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT_S))


def test_rpc_pattern_closes_cleanly(server):
    # Closing the RPC cancels its result queue's consumer, which auto-deletes the queue and with
    # it the rpc.dlx exchange; the RPC then unbinds from both (RabbitMQ: unbind-ok).
    async def scenario():
        connection = await aio_pika.connect(url(server.port))
        channel = await connection.channel()
        rpc = await aio_pika.patterns.RPC.create(channel)

        async def multiply(*, x, y):
            return x * y

        await rpc.register("multiply", multiply, auto_delete=True)
        assert await rpc.proxy.multiply(x=6, y=7) == 42
        await rpc.close()
        assert not channel.is_closed
        await connection.close()

    run(scenario())


def test_unbind_of_a_missing_exchange_or_queue_is_ok(server):
    async def scenario():
        connection = await aio_pika.connect(url(server.port))
        channel = await connection.channel()
        queue = await channel.declare_queue("unbind-me", auto_delete=True)
        await queue.unbind("no-such-exchange", "key")
        await channel.channel.queue_unbind("no-such-queue", "amq.direct", "key")
        await channel.channel.exchange_unbind("no-such-destination", "no-such-source", "key")
        # A real binding still unbinds, and the channel is still open after all of it.
        await queue.bind("amq.direct", "key")
        await queue.unbind("amq.direct", "key")
        assert not channel.is_closed
        await connection.close()

    run(scenario())


def test_mandatory_publish_refused_by_a_full_queue_is_nacked_not_returned(server):
    async def scenario():
        connection = await aio_pika.connect(url(server.port))
        channel = await connection.channel(publisher_confirms=True)
        returned = []
        channel.return_callbacks.add(lambda _channel, message: returned.append(message))
        await channel.declare_queue(
            "full", exclusive=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
        await channel.default_exchange.publish(
            aio_pika.Message(b"fits"), routing_key="full", mandatory=True)
        with pytest.raises(aio_pika.exceptions.DeliveryError) as refused:
            await channel.default_exchange.publish(
                aio_pika.Message(b"refused"), routing_key="full", mandatory=True)
        assert refused.value.frame.name == "Basic.Nack"
        assert returned == []
        # Unroutable is still returned, before its ack (with a return callback, aio-pika hands
        # it there and the publish succeeds).
        await channel.default_exchange.publish(
            aio_pika.Message(b"nowhere"), routing_key="no-such-queue", mandatory=True)
        assert [message.body for message in returned] == [b"nowhere"]
        await connection.close()

    run(scenario())


def test_second_exclusive_consumer_on_another_channel_is_refused(server):
    async def scenario():
        connection = await aio_pika.connect(url(server.port))
        first = await connection.channel()
        queue = await first.declare_queue("exclusive-use", exclusive=True)
        await queue.consume(lambda message: None, exclusive=True)
        second = await connection.channel()
        again = await second.declare_queue("exclusive-use", exclusive=True)
        assert again.declaration_result.consumer_count == 1
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused) as refused:
            await again.consume(lambda message: None, exclusive=True)
        assert "ACCESS_REFUSED - queue 'exclusive-use' in vhost '/' in exclusive use" in str(
            refused.value)
        assert not first.is_closed
        await connection.close()

    run(scenario())


def test_unknown_exchange_type_closes_the_connection_with_503(server):
    async def scenario():
        connection = await aio_pika.connect(url(server.port))
        channel = await connection.channel()
        with pytest.raises(aiormq.exceptions.ConnectionCommandInvalid) as closed:
            await channel.declare_exchange("odd", type="x-no-such-type")
        assert "COMMAND_INVALID - unknown exchange type 'x-no-such-type'" in str(closed.value)
        await connection.close()

    run(scenario())


def test_channel_numbers_past_channel_max_open(server):
    # aiormq numbers channels from the top when asked; channel_max bounds how many are open.
    async def scenario():
        connection = await aiormq.connect(url(server.port))
        assert connection.connection_tune.channel_max == 2047
        channel = await connection.channel(65535)
        assert channel.number == 65535
        declared = await channel.queue_declare("", exclusive=True)
        assert declared.queue.startswith("amq.gen-")
        await connection.close()

    run(scenario())


def test_update_secret_is_accepted(server):
    async def scenario():
        connection = await aiormq.connect(url(server.port))
        await connection.update_secret("a-refreshed-token", reason="token refresh")
        channel = await connection.channel()  # the connection carries on
        await channel.queue_declare("", exclusive=True)
        await connection.close()

    run(scenario())


class DroppingProxy:
    """A TCP proxy to the broker whose drop() cuts every connection through it and refuses new
    ones for an outage."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.pipes = set()
        self.down_until = 0.0
        self.accepted = 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def handle(self, reader, writer):
        if time.monotonic() < self.down_until:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.accepted += 1
        pipes = {asyncio.ensure_future(self.pipe(reader, upstream_writer)),
                 asyncio.ensure_future(self.pipe(upstream_reader, writer))}
        self.pipes |= pipes
        await asyncio.wait(pipes)
        self.pipes -= pipes

    @staticmethod
    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def drop(self, outage_s):
        self.down_until = time.monotonic() + outage_s
        for pipe in list(self.pipes):
            pipe.cancel()

    def close(self):
        self.server.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_robust_connection_recovers_its_consumer_after_repeated_drops(server, seed):
    drops = 30
    random_source = random.Random(seed)

    async def scenario():
        proxy = DroppingProxy(server.port)
        await proxy.start()
        direct = await aio_pika.connect(url(server.port))
        publisher = await direct.channel()
        await publisher.declare_queue("robust", durable=True)
        robust = await aio_pika.connect_robust(
            f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.05")
        reconnects = []
        robust.reconnect_callbacks.add(lambda *args: reconnects.append(1))
        channel = await robust.channel()
        await channel.set_qos(prefetch_count=10)
        queue = await channel.declare_queue("robust", durable=True)
        received = set()

        async def on_message(message):
            received.add(message.body)
            await message.ack()

        await queue.consume(on_message)
        sent = set()

        async def publish(body):
            sent.add(body)
            await publisher.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="robust")

        for drop in range(drops):
            # aio-pika 8.2.5 stops reconnecting for good when a drop lands while it reopens its
            # channels (with RabbitMQ as with hamq; docs/compatibility.md): each drop waits
            # until the last one was recovered from, then comes 0 to 100 ms later.
            while len(reconnects) < drop:
                await asyncio.sleep(0.01)  # bounded by TIMEOUT_S
            for n in range(random_source.randint(0, 20)):
                await publish(b"%d-%d" % (drop, n))
            await asyncio.sleep(random_source.uniform(0, 0.1))  # traffic between the drops
            proxy.drop(random_source.uniform(0, 0.1))
        await publish(b"after the last drop")  # arrives only through a restored consumer
        while received != sent:
            await asyncio.sleep(0.02)  # bounded by TIMEOUT_S
        declared = await publisher.declare_queue("robust", durable=True, passive=True)
        assert declared.declaration_result.consumer_count == 1
        assert len(reconnects) == drops and proxy.accepted > drops
        await robust.close()
        await direct.close()
        proxy.close()

    run(scenario())
