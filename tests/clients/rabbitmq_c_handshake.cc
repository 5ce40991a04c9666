// Connects to hamq with rabbitmq-c: login, channels, a clean close, and a refused login.
// Usage: rabbitmq_c_handshake PORT. Prints OK and exits 0 when everything held.
#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

void check(bool condition, const char* what) {
  if (!condition) {
    std::printf("FAILED: %s\n", what);
    std::exit(1);
  }
}

amqp_connection_state_t connect(int port) {
  amqp_connection_state_t connection = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(connection);
  check(socket != nullptr, "socket created");
  check(amqp_socket_open(socket, "127.0.0.1", port) == AMQP_STATUS_OK, "socket connected");
  return connection;
}

}  // namespace

int main(int argc, char** argv) {
  check(argc == 2, "usage: rabbitmq_c_handshake PORT");
  int port = std::atoi(argv[1]);

  amqp_connection_state_t connection = connect(port);
  amqp_rpc_reply_t reply =
      amqp_login(connection, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  check(reply.reply_type == AMQP_RESPONSE_NORMAL, "login succeeds");
  check(amqp_get_channel_max(connection) == 2047, "channel_max 2047");
  check(amqp_get_frame_max(connection) == 131072, "frame_max 131072");
  for (amqp_channel_t channel = 1; channel <= 5; ++channel) {
    amqp_channel_open(connection, channel);
    check(amqp_get_rpc_reply(connection).reply_type == AMQP_RESPONSE_NORMAL, "channel opens");
  }
  for (amqp_channel_t channel = 1; channel <= 5; ++channel) {
    reply = amqp_channel_close(connection, channel, AMQP_REPLY_SUCCESS);
    check(reply.reply_type == AMQP_RESPONSE_NORMAL, "channel closes");
  }
  reply = amqp_connection_close(connection, AMQP_REPLY_SUCCESS);
  check(reply.reply_type == AMQP_RESPONSE_NORMAL, "connection closes");
  amqp_destroy_connection(connection);

  connection = connect(port);
  reply = amqp_login(connection, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "wrong");
  check(reply.reply_type != AMQP_RESPONSE_NORMAL, "a wrong password is refused");
  amqp_destroy_connection(connection);
  std::printf("OK\n");
  return 0;
}
