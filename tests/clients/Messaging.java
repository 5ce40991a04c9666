// Publishes with confirms, consumes with manual acks and prefetch, and sees its consumer
// cancelled when the queue is deleted, with the RabbitMQ Java client. Prints OK and exits 0 when
// everything held.
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public class Messaging {
  static void check(boolean condition, String what) {
    if (!condition) {
      System.out.println("FAILED: " + what);
      System.exit(1);
    }
  }

  public static void main(String[] args) throws Exception {
    ConnectionFactory factory = new ConnectionFactory();
    factory.setHost("127.0.0.1");
    factory.setPort(Integer.parseInt(args[0]));
    factory.setAutomaticRecoveryEnabled(false);
    Connection connection = factory.newConnection();
    Channel publisher = connection.createChannel();
    publisher.confirmSelect();
    String queue = publisher.queueDeclare().getQueue();
    check(queue.startsWith("amq.gen-"), "server-named queue");
    int count = 500;
    for (int i = 0; i < count; i++) {
      publisher.basicPublish("", queue, null, ("m" + i).getBytes(StandardCharsets.UTF_8));
    }
    check(publisher.waitForConfirms(10_000), "every publish confirmed");

    Channel consumer = connection.createChannel();
    consumer.basicQos(50);
    List<String> received = Collections.synchronizedList(new ArrayList<>());
    CountDownLatch all = new CountDownLatch(count);
    CountDownLatch cancelled = new CountDownLatch(1);
    consumer.basicConsume(queue, false, new DefaultConsumer(consumer) {
      @Override
      public void handleDelivery(String tag, Envelope envelope, AMQP.BasicProperties properties,
          byte[] body) throws java.io.IOException {
        received.add(new String(body, StandardCharsets.UTF_8));
        getChannel().basicAck(envelope.getDeliveryTag(), false);
        all.countDown();
      }

      @Override
      public void handleCancel(String tag) {
        cancelled.countDown();
      }
    });
    check(all.await(10, TimeUnit.SECONDS), "every message delivered");
    for (int i = 0; i < count; i++) check(received.get(i).equals("m" + i), "publish order");

    publisher.queueDelete(queue);
    check(cancelled.await(5, TimeUnit.SECONDS), "consumer cancelled when its queue is deleted");
    connection.close();
    System.out.println("OK");
  }
}
