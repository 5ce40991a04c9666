// Connects to hamq with the RabbitMQ Java client: handshake, channels, server properties,
// a refused login, and a clean close. Prints OK and exits 0 when everything held.
import com.rabbitmq.client.AuthenticationFailureException;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

public class Handshake {
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
    Map<String, Object> properties = connection.getServerProperties();
    check("hamq".equals(properties.get("product").toString()), "product is hamq");
    @SuppressWarnings("unchecked")
    Map<String, Object> capabilities = (Map<String, Object>) properties.get("capabilities");
    check(Boolean.TRUE.equals(capabilities.get("publisher_confirms")), "publisher_confirms");
    check(connection.getChannelMax() == 2047, "channel_max 2047");
    check(connection.getFrameMax() == 131072, "frame_max 131072");
    List<Channel> channels = new ArrayList<>();
    for (int i = 0; i < 10; i++) channels.add(connection.createChannel());
    for (Channel channel : channels) check(channel.isOpen(), "channel open");
    for (Channel channel : channels) channel.close();
    connection.close();
    check(!connection.isOpen(), "connection closed");

    factory.setPassword("wrong");
    try {
      factory.newConnection().close();
      check(false, "a wrong password is refused");
    } catch (AuthenticationFailureException expected) {
      check(expected.getMessage().contains("ACCESS_REFUSED"), "refusal says ACCESS_REFUSED");
    }
    System.out.println("OK");
  }
}
