// amqplib programs the integration tests run against hamq-server (tests/integration/
// test_amqplib.py). Usage: node compat.js PORT SCENARIO; prints one JSON line and exits 0 when
// the scenario ran to its end.
'use strict';
const amqp = require('amqplib');

const [port, scenario] = process.argv.slice(2);
const url = `amqp://guest:guest@127.0.0.1:${port}/`;

const scenarios = {
  // amqplib's updateSecret (token refresh): RabbitMQ's internal users accept any new secret.
  async update_secret() {
    const connection = await amqp.connect(url);
    await connection.updateSecret(Buffer.from('a-refreshed-token'), 'token refresh');
    const channel = await connection.createChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    await connection.close();
    return { queue };
  },

  // The tutorials' work queue: persistent messages, prefetch 1, acks.
  async work_queue() {
    const connection = await amqp.connect(url);
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue('task_queue', { durable: true });
    await channel.prefetch(1);
    const sent = ['first.', 'second..', 'third...'];
    for (const task of sent) {
      channel.sendToQueue('task_queue', Buffer.from(task), { persistent: true });
    }
    await channel.waitForConfirms();
    const received = [];
    await new Promise((resolve) => {
      channel.consume('task_queue', (message) => {
        received.push(message.content.toString());
        channel.ack(message);
        if (received.length === sent.length) resolve();
      });
    });
    await connection.close();
    return { received };
  },

  // amqplib's own "find high watermark" test: publish until the client's buffer is full, then
  // close at once. amqplib writes connection.close before the publishes still buffered and goes
  // on writing them; its close completes only when it reads close-ok, so the broker must not
  // reset the connection under those writes (RabbitMQ lets the client close first).
  async close_while_publishing() {
    const connection = await amqp.connect(url);
    const channel = await connection.createChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    let sent = 0;
    while (channel.sendToQueue(queue, Buffer.alloc(1024))) ++sent;
    const closed = connection.close().then(() => 'closed');
    const stuck = new Promise((resolve) => setTimeout(() => resolve('stuck'), 10000).unref());
    const outcome = await Promise.race([closed, stuck]);
    if (outcome !== 'closed') throw new Error('connection.close() did not complete');
    return { sent };
  },

  // Unbinding from an exchange that is gone: unbind-ok, the channel stays open.
  async unbind_missing() {
    const connection = await amqp.connect(url);
    const channel = await connection.createChannel();
    const { queue } = await channel.assertQueue('', { exclusive: true });
    await channel.unbindQueue(queue, 'no-such-exchange', 'key');
    await channel.checkQueue(queue);
    await connection.close();
    return { queue };
  },
};

(async () => {
  const result = await scenarios[scenario]();
  console.log(JSON.stringify(result));
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
