// The queue features applications use to survive failures of their own (TTL, queue expiry,
// length limits, dead-lettering, delivery limits, priorities, single active consumer, delayed
// messages), exercised with the RabbitMQ Java client. Usage: QueueFeatures PORT SCENARIO.
// Prints OK and exits 0 when every check of the scenario held; prints FAILED and exits 1 if not.
import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.DefaultConsumer;
import com.rabbitmq.client.Envelope;
import com.rabbitmq.client.GetResponse;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public class QueueFeatures {
  static void check(boolean condition, String what) {
    if (!condition) {
      System.out.println("FAILED: " + what);
      System.exit(1);
    }
  }

  static byte[] bytes(String text) {
    return text.getBytes(StandardCharsets.UTF_8);
  }

  static String text(byte[] body) {
    return new String(body, StandardCharsets.UTF_8);
  }

  static Map<String, Object> args(Object... pairs) {
    Map<String, Object> map = new HashMap<>();
    for (int i = 0; i < pairs.length; i += 2) map.put((String) pairs[i], pairs[i + 1]);
    return map;
  }

  // Waits for a message on `queue` (polling with basic.get), up to 10 s.
  static GetResponse await(Channel channel, String queue) throws Exception {
    long deadline = System.nanoTime() + 10_000_000_000L;
    while (System.nanoTime() < deadline) {
      GetResponse response = channel.basicGet(queue, true);
      if (response != null) return response;
      Thread.sleep(20);
    }
    check(false, "a message on " + queue + " in time");
    return null;
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> firstDeath(AMQP.BasicProperties properties) {
    List<Map<String, Object>> deaths =
        (List<Map<String, Object>>) properties.getHeaders().get("x-death");
    check(deaths != null && !deaths.isEmpty(), "an x-death header");
    return deaths.get(0);
  }

  static void declareDeadLetterQueue(Channel channel) throws IOException {
    channel.exchangeDeclare("dlx", "fanout");
    channel.queueDeclare("dead", false, false, false, null);
    channel.queueBind("dead", "dlx", "");
  }

  static long messageCount(Channel channel, String queue) throws IOException {
    return channel.queueDeclarePassive(queue).getMessageCount();
  }

  static void ttl(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    declareDeadLetterQueue(channel);
    channel.queueDeclare("ttl", false, false, false, args("x-dead-letter-exchange", "dlx"));
    channel.basicPublish("", "ttl", null, bytes("forever"));
    channel.basicPublish("", "ttl", new AMQP.BasicProperties.Builder().expiration("150").build(),
        bytes("soon"));
    GetResponse dead = await(channel, "dead");
    check(text(dead.getBody()).equals("soon"), "the message behind the head expired on time");
    Map<String, Object> death = firstDeath(dead.getProps());
    check(death.get("reason").toString().equals("expired"), "reason expired");
    check(death.get("queue").toString().equals("ttl"), "x-death queue");
    check(Long.valueOf(1).equals(death.get("count")), "x-death count is a long 1");
    check(death.get("original-expiration").toString().equals("150"), "original-expiration");
    check(dead.getProps().getExpiration() == null, "expiration removed");
    check(messageCount(channel, "ttl") == 1, "the live message stays");

    channel.queueDeclare("ttl-queue", false, false, false,
        args("x-message-ttl", 100, "x-dead-letter-exchange", "dlx"));
    channel.basicPublish("", "ttl-queue", null, bytes("queue ttl"));
    check(text(await(channel, "dead").getBody()).equals("queue ttl"), "x-message-ttl expires");
  }

  static void expires(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    channel.queueDeclare("lease", false, false, false, args("x-expires", 200));
    long deadline = System.nanoTime() + 10_000_000_000L;
    while (true) {
      check(System.nanoTime() < deadline, "the unused queue was deleted in time");
      try {
        connection.createChannel().queueDeclarePassive("lease");
        Thread.sleep(20);
      } catch (IOException gone) {
        break;
      }
    }
  }

  static void maxLength(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    declareDeadLetterQueue(channel);
    channel.queueDeclare("bounded", false, false, false,
        args("x-max-length", 2, "x-dead-letter-exchange", "dlx"));
    for (String body : new String[] {"1", "2", "3"}) channel.basicPublish("", "bounded", null, bytes(body));
    GetResponse dropped = await(channel, "dead");
    check(text(dropped.getBody()).equals("1"), "drop-head drops the oldest");
    check(firstDeath(dropped.getProps()).get("reason").toString().equals("maxlen"), "reason maxlen");

    channel.queueDeclare("refusing", false, false, false,
        args("x-max-length", 1, "x-overflow", "reject-publish"));
    Channel confirming = connection.createChannel();
    confirming.confirmSelect();
    confirming.basicPublish("", "refusing", null, bytes("fits"));
    check(confirming.waitForConfirms(5000), "the first publish is acked");
    confirming.basicPublish("", "refusing", null, bytes("does not fit"));
    check(!confirming.waitForConfirms(5000), "the publish to a full queue is nacked");
  }

  static void deadLetter(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    declareDeadLetterQueue(channel);
    channel.queueDeclare("work", false, false, false,
        args("x-dead-letter-exchange", "dlx", "x-dead-letter-routing-key", "failed"));
    channel.basicPublish("", "work", null, bytes("bad"));
    GetResponse got = channel.basicGet("work", false);
    channel.basicReject(got.getEnvelope().getDeliveryTag(), false);
    GetResponse dead = await(channel, "dead");
    check(dead.getEnvelope().getExchange().equals("dlx"), "delivered from the dead-letter exchange");
    check(dead.getEnvelope().getRoutingKey().equals("failed"), "the dead-letter routing key");
    Map<String, Object> death = firstDeath(dead.getProps());
    check(death.get("reason").toString().equals("rejected"), "reason rejected");
    check(death.get("exchange").toString().equals(""), "the original exchange");
    Map<String, Object> headers = dead.getProps().getHeaders();
    check(headers.get("x-first-death-queue").toString().equals("work"), "x-first-death-queue");
    check(headers.get("x-last-death-reason").toString().equals("rejected"), "x-last-death-reason");
  }

  static void deliveryLimit(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    channel.queueDeclare("poison", true, false, false, args("x-delivery-limit", 1));
    channel.basicPublish("", "poison", null, bytes("crash me"));
    GetResponse first = channel.basicGet("poison", false);
    check(first.getProps().getHeaders() == null
        || !first.getProps().getHeaders().containsKey("x-delivery-count"), "no count at first");
    channel.basicNack(first.getEnvelope().getDeliveryTag(), false, true);
    GetResponse second = channel.basicGet("poison", false);
    check(second.getEnvelope().isRedeliver(), "redelivered");
    check(Long.valueOf(1).equals(second.getProps().getHeaders().get("x-delivery-count")),
        "x-delivery-count 1 as a long");
    channel.basicNack(second.getEnvelope().getDeliveryTag(), false, true);
    check(messageCount(channel, "poison") == 0, "past the limit, not requeued");
    GetResponse parked = await(channel, "hamq.parked");
    check(text(parked.getBody()).equals("crash me"), "parked, not dropped");
    check(firstDeath(parked.getProps()).get("reason").toString().equals("delivery_limit"),
        "reason delivery_limit");
  }

  static void priority(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    channel.queueDeclare("ranked", false, false, false, args("x-max-priority", 5));
    int[] priorities = {1, 5, 3, 5, 0};
    for (int i = 0; i < priorities.length; i++) {
      channel.basicPublish("", "ranked",
          new AMQP.BasicProperties.Builder().priority(priorities[i]).build(), bytes("p" + i));
    }
    List<String> order = new ArrayList<>();
    GetResponse response;
    while ((response = channel.basicGet("ranked", true)) != null) order.add(text(response.getBody()));
    check(order.equals(List.of("p1", "p3", "p2", "p0", "p4")), "highest first, FIFO within: " + order);
  }

  static void singleActiveConsumer(Connection connection, ConnectionFactory factory) throws Exception {
    Channel channel = connection.createChannel();
    channel.queueDeclare("sac", false, false, false, args("x-single-active-consumer", true));
    List<String> first = Collections.synchronizedList(new ArrayList<>());
    List<String> second = Collections.synchronizedList(new ArrayList<>());
    Connection firstConnection = factory.newConnection();
    Channel a = firstConnection.createChannel();
    a.basicConsume("sac", true, recorder(a, first));
    Channel b = connection.createChannel();
    b.basicConsume("sac", true, recorder(b, second));
    channel.basicPublish("", "sac", null, bytes("to the active one"));
    waitFor(() -> first.size() == 1, "the first consumer is active");
    firstConnection.close();
    channel.basicPublish("", "sac", null, bytes("after failover"));
    waitFor(() -> second.size() == 1, "the second consumer took over");
    check(second.get(0).equals("after failover"), "failover delivery");
  }

  static void delayed(Connection connection) throws Exception {
    Channel channel = connection.createChannel();
    channel.exchangeDeclare("later", "x-delayed-message", true, false, args("x-delayed-type", "direct"));
    channel.queueDeclare("scheduled", false, false, false, null);
    channel.queueBind("scheduled", "later", "job");
    long sent = System.nanoTime();
    channel.basicPublish("later", "job",
        new AMQP.BasicProperties.Builder().headers(args("x-delay", 250)).build(), bytes("run me"));
    check(channel.basicGet("scheduled", true) == null, "not there before its delay");
    GetResponse got = await(channel, "scheduled");
    check((System.nanoTime() - sent) / 1_000_000 >= 240, "not before its delay");
    check(Integer.valueOf(-250).equals(got.getProps().getHeaders().get("x-delay")), "x-delay negated");
    try {
      connection.createChannel().exchangeDeclare("bad", "x-delayed-message", true, false, null);
      check(false, "a delayed exchange without x-delayed-type is refused");
    } catch (IOException refused) {
      check(refused.getCause().getMessage().contains("'x-delayed-type' must be an existing exchange type"),
          "the plugin's reason");
    }
  }

  static void badArguments(Connection connection) throws Exception {
    try {
      connection.createChannel().queueDeclare("bad", false, false, false, args("x-max-priority", 300));
      check(false, "x-max-priority 300 is refused");
    } catch (IOException refused) {
      check(refused.getCause().getMessage().contains("PRECONDITION_FAILED - invalid arg 'x-max-priority'"),
          "406 with RabbitMQ's reason");
    }
    Channel channel = connection.createChannel();
    channel.queueDeclare("unknown-args", false, false, false, args("x-hamq-does-not-know", "fine"));
  }

  interface Condition {
    boolean holds();
  }

  static void waitFor(Condition condition, String what) throws InterruptedException {
    long deadline = System.nanoTime() + 10_000_000_000L;
    while (!condition.holds()) {
      check(System.nanoTime() < deadline, what);
      Thread.sleep(10);
    }
  }

  static DefaultConsumer recorder(Channel channel, List<String> into) {
    return new DefaultConsumer(channel) {
      @Override
      public void handleDelivery(String tag, Envelope envelope, AMQP.BasicProperties properties,
          byte[] body) {
        into.add(text(body));
      }
    };
  }

  public static void main(String[] args) throws Exception {
    ConnectionFactory factory = new ConnectionFactory();
    factory.setHost("127.0.0.1");
    factory.setPort(Integer.parseInt(args[0]));
    factory.setAutomaticRecoveryEnabled(false);
    try (Connection connection = factory.newConnection()) {
      switch (args[1]) {
        case "ttl" -> ttl(connection);
        case "expires" -> expires(connection);
        case "max-length" -> maxLength(connection);
        case "dead-letter" -> deadLetter(connection);
        case "delivery-limit" -> deliveryLimit(connection);
        case "priority" -> priority(connection);
        case "single-active-consumer" -> singleActiveConsumer(connection, factory);
        case "delayed" -> delayed(connection);
        case "bad-arguments" -> badArguments(connection);
        default -> check(false, "unknown scenario " + args[1]);
      }
    }
    System.out.println("OK");
  }
}
