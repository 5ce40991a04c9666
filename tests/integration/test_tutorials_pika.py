"""The six RabbitMQ tutorials, written as their pika versions are, against hamq."""

import threading
import uuid

import pika
import pika.exceptions
import pytest


def connect(server):
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.port, connection_attempts=1))


def drain(channel, queue, count, auto_ack=True, time_limit_s=5):
    """Consumes `count` bodies from `queue` (fails if they do not arrive in time)."""
    got = []
    for method, _, body in channel.consume(queue, auto_ack=auto_ack,
                                           inactivity_timeout=time_limit_s):
        assert method is not None, f"only {len(got)} of {count} messages arrived: {got}"
        got.append(body)
        if not auto_ack:
            channel.basic_ack(method.delivery_tag)
        if len(got) == count:
            break
    channel.cancel()
    return got


def test_hello_world(server):
    sender = connect(server)
    channel = sender.channel()
    channel.queue_declare(queue="hello")
    channel.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")
    sender.close()

    receiver = connect(server)
    channel = receiver.channel()
    channel.queue_declare(queue="hello")
    assert drain(channel, "hello", 1) == [b"Hello World!"]
    receiver.close()


def test_work_queues_share_tasks_with_prefetch_and_manual_ack(server):
    producer = connect(server)
    channel = producer.channel()
    channel.queue_declare(queue="task_queue", durable=True)
    for i in range(20):
        channel.basic_publish(exchange="", routing_key="task_queue", body=b"task %d" % i,
                              properties=pika.BasicProperties(delivery_mode=2))

    workers = [connect(server) for _ in range(2)]
    channels = [w.channel() for w in workers]
    received = {0: [], 1: []}
    for index, ch in enumerate(channels):
        ch.basic_qos(prefetch_count=1)

        def callback(ch_, method, properties, body, index=index):
            received[index].append(body)
            ch_.basic_ack(delivery_tag=method.delivery_tag)

        ch.basic_consume(queue="task_queue", on_message_callback=callback)
    # Each worker holds at most one unacked task, so both get work.
    deadline = 200
    while len(received[0]) + len(received[1]) < 20 and deadline > 0:
        for w in workers:
            w.process_data_events(time_limit=0.02)
        deadline -= 1
    assert sorted(received[0] + received[1]) == sorted(b"task %d" % i for i in range(20))
    assert received[0] and received[1]
    for w in workers:
        w.close()
    producer.close()


def test_publish_subscribe_fanout(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    queues = []
    for _ in range(3):
        result = channel.queue_declare(queue="", exclusive=True)
        assert result.method.queue.startswith("amq.gen-")
        channel.queue_bind(exchange="logs", queue=result.method.queue)
        queues.append(result.method.queue)
    channel.basic_publish(exchange="logs", routing_key="", body=b"info: hello")
    for queue in queues:
        assert drain(channel, queue, 1) == [b"info: hello"]
    connection.close()


def test_routing_direct(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare(exchange="direct_logs", exchange_type="direct")
    errors = channel.queue_declare(queue="", exclusive=True).method.queue
    everything = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(exchange="direct_logs", queue=errors, routing_key="error")
    for severity in ("info", "warning", "error"):
        channel.queue_bind(exchange="direct_logs", queue=everything, routing_key=severity)
    for severity in ("info", "warning", "error", "debug"):
        channel.basic_publish(exchange="direct_logs", routing_key=severity,
                              body=severity.encode())
    assert drain(channel, errors, 1) == [b"error"]
    assert drain(channel, everything, 3) == [b"info", b"warning", b"error"]
    assert channel.queue_declare(queue=everything, passive=True).method.message_count == 0
    connection.close()


def test_topics(server):
    connection = connect(server)
    channel = connection.channel()
    channel.exchange_declare(exchange="topic_logs", exchange_type="topic")
    bindings = {"kern": ["kern.*"], "critical": ["*.critical"], "all": ["#"],
                "lazy": ["lazy.#", "*.*.rabbit"]}
    queues = {}
    for name, keys in bindings.items():
        queues[name] = channel.queue_declare(queue="", exclusive=True).method.queue
        for key in keys:
            channel.queue_bind(exchange="topic_logs", queue=queues[name], routing_key=key)
    keys = ["kern.critical", "kern.info", "cron.critical", "lazy.orange.rabbit",
            "quick.brown.rabbit", "lazy", "a.b.c.d"]
    for key in keys:
        channel.basic_publish(exchange="topic_logs", routing_key=key, body=key.encode())
    assert drain(channel, queues["kern"], 2) == [b"kern.critical", b"kern.info"]
    assert drain(channel, queues["critical"], 2) == [b"kern.critical", b"cron.critical"]
    assert len(drain(channel, queues["all"], len(keys))) == len(keys)
    # lazy.orange.rabbit matches both of lazy's bindings and still arrives once.
    assert drain(channel, queues["lazy"], 3) == [b"lazy.orange.rabbit", b"quick.brown.rabbit",
                                                 b"lazy"]
    for name in queues:
        assert channel.queue_declare(queue=queues[name], passive=True).method.message_count == 0
    connection.close()


def test_rpc_with_reply_to_and_correlation_id(server):
    server_connection = connect(server)
    server_channel = server_connection.channel()
    server_channel.queue_declare(queue="rpc_queue")
    server_channel.basic_qos(prefetch_count=1)

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def on_request(ch, method, props, body):
        response = str(fib(int(body)))
        ch.basic_publish(exchange="", routing_key=props.reply_to,
                         properties=pika.BasicProperties(correlation_id=props.correlation_id),
                         body=response)
        ch.basic_ack(delivery_tag=method.delivery_tag)

    server_channel.basic_consume(queue="rpc_queue", on_message_callback=on_request)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            server_connection.process_data_events(time_limit=0.05)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = connect(server)
        channel = client.channel()
        callback_queue = channel.queue_declare(queue="", exclusive=True).method.queue
        answers = {}

        def on_response(ch, method, props, body):
            answers[props.correlation_id] = int(body)

        channel.basic_consume(queue=callback_queue, on_message_callback=on_response,
                              auto_ack=True)
        requests = {}
        for n in (10, 20, 25):
            corr_id = str(uuid.uuid4())
            requests[corr_id] = n
            channel.basic_publish(exchange="", routing_key="rpc_queue", body=str(n),
                                  properties=pika.BasicProperties(reply_to=callback_queue,
                                                                  correlation_id=corr_id))
        for _ in range(200):
            if len(answers) == 3:
                break
            client.process_data_events(time_limit=0.05)
        assert {requests[c]: v for c, v in answers.items()} == {10: 55, 20: 6765, 25: 75025}
        client.close()
    finally:
        stop.set()
        thread.join()
        server_connection.close()


def test_rpc_with_direct_reply_to(server):
    responder = connect(server)
    responder_channel = responder.channel()
    responder_channel.queue_declare(queue="rpc_direct")

    client = connect(server)
    channel = client.channel()
    replies = []
    channel.basic_consume(queue="amq.rabbitmq.reply-to", auto_ack=True,
                          on_message_callback=lambda ch, m, p, body: replies.append(
                              (p.correlation_id, body)))
    channel.basic_publish(exchange="", routing_key="rpc_direct", body=b"ping",
                          properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                          correlation_id="c-1"))
    method, props, body = responder_channel.basic_get("rpc_direct", auto_ack=True)
    assert body == b"ping"
    # The broker replaced the pseudo-queue with this channel's own reply name.
    assert props.reply_to.startswith("amq.rabbitmq.reply-to.")
    # The requester is alive: a passive declare of the name reports one consumer.
    alive = responder_channel.queue_declare(queue=props.reply_to, passive=True)
    assert alive.method.consumer_count == 1
    responder_channel.basic_publish(exchange="", routing_key=props.reply_to, body=b"pong",
                                    properties=pika.BasicProperties(correlation_id="c-1"))
    for _ in range(100):
        if replies:
            break
        client.process_data_events(time_limit=0.05)
    assert replies == [("c-1", b"pong")]
    client.close()
    # Once the requester is gone its name no longer exists.
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
        responder_channel.queue_declare(queue=props.reply_to, passive=True)
    assert gone.value.reply_code == 404
    responder.close()


def test_direct_reply_to_needs_no_ack_and_a_consumer(server):
    connection = connect(server)
    channel = connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_consume(queue="amq.rabbitmq.reply-to", on_message_callback=lambda *a: None)
    assert refused.value.reply_code == 406
    channel = connection.channel()
    channel.queue_declare(queue="requests")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
        channel.basic_publish(exchange="", routing_key="requests", body=b"x",
                              properties=pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
        channel.queue_declare(queue="requests", passive=True)
    assert refused.value.reply_code == 406
    assert refused.value.reply_text == "PRECONDITION_FAILED - fast reply consumer does not exist"
    connection.close()
