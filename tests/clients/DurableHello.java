// The seed scenario's Java side, as an application written for RabbitMQ would do it:
//   DurableHello PORT           declares the queue "hello" durable and publishes to it with a
//                               publisher confirm; prints OK.
//   DurableHello PORT consume   declares it the same way and takes one message; prints its body.
// The broker's refusal is printed and exits 2; an empty queue exits 3.
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.GetResponse;
import com.rabbitmq.client.MessageProperties;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

public class DurableHello {
  public static void main(String[] args) throws Exception {
    ConnectionFactory factory = new ConnectionFactory();
    factory.setHost("127.0.0.1");
    factory.setPort(Integer.parseInt(args[0]));
    factory.setAutomaticRecoveryEnabled(false);
    boolean consume = args.length > 1 && args[1].equals("consume");
    try (Connection connection = factory.newConnection();
        Channel channel = connection.createChannel()) {
      channel.queueDeclare("hello", true, false, false, null);
      if (consume) {
        GetResponse response = channel.basicGet("hello", false);
        if (response == null) {
          System.out.println("the queue is empty");
          System.exit(3);
        }
        System.out.println(new String(response.getBody(), StandardCharsets.UTF_8));
        channel.basicAck(response.getEnvelope().getDeliveryTag(), false);
        return;
      }
      channel.confirmSelect();
      channel.basicPublish("", "hello", MessageProperties.PERSISTENT_TEXT_PLAIN,
          "Hello World!".getBytes(StandardCharsets.UTF_8));
      channel.waitForConfirmsOrDie(10_000);
      System.out.println("OK");
    } catch (IOException e) {
      Throwable cause = e.getCause() != null ? e.getCause() : e;
      System.out.println(cause.getMessage());
      System.exit(2);
    }
  }
}
