// Messaging with rabbitmq-c: declare, bind, publish with confirms, consume with manual acks.
// Usage: rabbitmq_c_messaging PORT. Prints OK and exits 0 when everything held.
#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

void check(bool condition, const char* what) {
  if (!condition) {
    std::printf("FAILED: %s\n", what);
    std::exit(1);
  }
}

void check_reply(amqp_connection_state_t connection, const char* what) {
  check(amqp_get_rpc_reply(connection).reply_type == AMQP_RESPONSE_NORMAL, what);
}

}  // namespace

int main(int argc, char** argv) {
  check(argc == 2, "usage: rabbitmq_c_messaging PORT");
  amqp_connection_state_t connection = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(connection);
  check(amqp_socket_open(socket, "127.0.0.1", std::atoi(argv[1])) == AMQP_STATUS_OK, "connect");
  check(amqp_login(connection, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                .reply_type == AMQP_RESPONSE_NORMAL,
        "login");
  amqp_channel_open(connection, 1);
  check_reply(connection, "channel.open");

  amqp_exchange_declare(connection, 1, amqp_cstring_bytes("c-topic"), amqp_cstring_bytes("topic"),
                        0, 0, 0, 0, amqp_empty_table);
  check_reply(connection, "exchange.declare");
  amqp_queue_declare(connection, 1, amqp_cstring_bytes("c-queue"), 0, 0, 0, 0, amqp_empty_table);
  check_reply(connection, "queue.declare");
  amqp_queue_bind(connection, 1, amqp_cstring_bytes("c-queue"), amqp_cstring_bytes("c-topic"),
                  amqp_cstring_bytes("orders.#"), amqp_empty_table);
  check_reply(connection, "queue.bind");

  amqp_confirm_select(connection, 1);
  check_reply(connection, "confirm.select");
  const int count = 10;
  for (int i = 0; i < count; ++i) {
    std::string body = "order " + std::to_string(i);
    check(amqp_basic_publish(connection, 1, amqp_cstring_bytes("c-topic"),
                             amqp_cstring_bytes("orders.new"), 0, 0, nullptr,
                             amqp_cstring_bytes(body.c_str())) == AMQP_STATUS_OK,
          "publish");
  }
  // Confirms: basic.ack frames covering all ten sequence numbers.
  uint64_t confirmed = 0;
  while (confirmed < count) {
    amqp_frame_t frame;
    check(amqp_simple_wait_frame(connection, &frame) == AMQP_STATUS_OK, "wait for a confirm");
    check(frame.frame_type == AMQP_FRAME_METHOD && frame.payload.method.id == AMQP_BASIC_ACK_METHOD,
          "a basic.ack");
    auto* ack = static_cast<amqp_basic_ack_t*>(frame.payload.method.decoded);
    confirmed = ack->delivery_tag;
  }

  amqp_basic_consume(connection, 1, amqp_cstring_bytes("c-queue"), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  check_reply(connection, "basic.consume");
  for (int i = 0; i < count; ++i) {
    amqp_envelope_t envelope;
    amqp_maybe_release_buffers(connection);
    check(
        amqp_consume_message(connection, &envelope, nullptr, 0).reply_type == AMQP_RESPONSE_NORMAL,
        "a delivery");
    std::string body(static_cast<char*>(envelope.message.body.bytes), envelope.message.body.len);
    check(body == "order " + std::to_string(i), "deliveries in publish order");
    check(amqp_basic_ack(connection, 1, envelope.delivery_tag, 0) == AMQP_STATUS_OK, "ack");
    amqp_destroy_envelope(&envelope);
  }
  amqp_channel_close(connection, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(connection, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(connection);
  std::printf("OK\n");
  return 0;
}
