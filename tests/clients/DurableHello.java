// The seed scenario's Java side: declares the queue "hello" durable and publishes to it, as an
// application written for RabbitMQ would. Prints OK, or the broker's refusal, and exits 0 or 2.
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import com.rabbitmq.client.MessageProperties;
import java.io.IOException;
import java.nio.charset.StandardCharsets;

public class DurableHello {
  public static void main(String[] args) throws Exception {
    ConnectionFactory factory = new ConnectionFactory();
    factory.setHost("127.0.0.1");
    factory.setPort(Integer.parseInt(args[0]));
    factory.setAutomaticRecoveryEnabled(false);
    try (Connection connection = factory.newConnection();
        Channel channel = connection.createChannel()) {
      channel.queueDeclare("hello", true, false, false, null);
      channel.basicPublish("", "hello", MessageProperties.PERSISTENT_TEXT_PLAIN,
          "Hello World!".getBytes(StandardCharsets.UTF_8));
      System.out.println("OK");
    } catch (IOException e) {
      Throwable cause = e.getCause() != null ? e.getCause() : e;
      System.out.println(cause.getMessage());
      System.exit(2);
    }
  }
}
