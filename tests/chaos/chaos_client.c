/* chaos_client: the fault harness's rabbitmq-c client (tests/chaos/chaos.py), a client that is
 * not hamq's own code, as applications' are.
 *
 *   chaos_client publish|consume --name NAME --seed N --nodes HOST,HOST,... --port PORT
 *                --queues QUEUE,QUEUE,...
 *
 * It connects to a node it picks (from the seed), and on any failure (a closed connection or
 * channel, a missed heartbeat, a confirm not come in 8 s) moves to another. A publisher sends
 * persistent messages with ids NAME.SESSION.SEQ (SESSION counts its connections), at most 50
 * unconfirmed, each id once (what was never confirmed is not sent again); a consumer consumes the
 * first queue with manual acks (prefetch 20), acking each message. Each event is a JSON line on
 * stdout with its CLOCK_MONOTONIC time: connect, disconnect, publish, confirm, nack, unroutable,
 * deliver, ack. It stops when its standard input ends.
 */
#define _DEFAULT_SOURCE
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

enum { max_nodes = 16, max_queues = 16, window = 50, confirm_timeout_s = 8, prefetch = 20 };

static const char* name = "client";
static const char* nodes[max_nodes];
static int node_count;
static const char* queues[max_queues];
static int queue_count;
static int port = 5672;
static unsigned seed = 1;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* True once standard input has ended: the harness's signal to stop. */
static int told_to_stop(void) {
  struct pollfd in = {.fd = 0, .events = POLLIN};
  if (poll(&in, 1, 0) <= 0) return 0;
  char buffer[64];
  return read(0, buffer, sizeof buffer) <= 0;
}

static int split(char* list, const char** out, int max) {
  int count = 0;
  for (char* item = strtok(list, ","); item != NULL && count < max; item = strtok(NULL, ",")) {
    out[count++] = item;
  }
  return count;
}

static void event(const char* op, const char* fields) {
  printf("{\"t\": %.6f, \"op\": \"%s\"%s%s}\n", now(), op, fields[0] ? ", " : "", fields);
  fflush(stdout);
}

static int rpc_ok(amqp_connection_state_t conn) {
  return amqp_get_rpc_reply(conn).reply_type == AMQP_RESPONSE_NORMAL;
}

/* A connection to `host` with channel 1 open, or NULL. */
static amqp_connection_state_t open_connection(const char* host) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  struct timeval timeout = {2, 0};
  if (socket == NULL || amqp_socket_open_noblock(socket, host, port, &timeout) != AMQP_STATUS_OK) {
    amqp_destroy_connection(conn);
    return NULL;
  }
  amqp_rpc_reply_t login =
      amqp_login(conn, "/", 0, 131072, 2, AMQP_SASL_METHOD_PLAIN, "guest", "guest");
  if (login.reply_type != AMQP_RESPONSE_NORMAL) {
    amqp_destroy_connection(conn);
    return NULL;
  }
  amqp_channel_open(conn, 1);
  if (!rpc_ok(conn)) {
    amqp_destroy_connection(conn);
    return NULL;
  }
  return conn;
}

struct pending {
  uint64_t tag;
  char id[96];
  double sent;
};

/* Settles the unconfirmed publishes up to `tag` (or only `tag`) as `op`; returns how many. */
static int settle(struct pending* unconfirmed, int* count, uint64_t tag, int multiple,
                  const char* op) {
  int kept = 0;
  int settled = 0;
  for (int k = 0; k < *count; ++k) {
    if (unconfirmed[k].tag == tag || (multiple && unconfirmed[k].tag < tag)) {
      if (unconfirmed[k].id[0] != '\0') { /* empty: returned unroutable, already told */
        char fields[160];
        snprintf(fields, sizeof fields, "\"id\": \"%s\"", unconfirmed[k].id);
        event(op, fields);
      }
      ++settled;
    } else {
      unconfirmed[kept++] = unconfirmed[k];
    }
  }
  *count = kept;
  return settled;
}

/* Reads one frame if one comes within `wait`; 0 when the connection must be given up. */
static int read_confirm(amqp_connection_state_t conn, struct pending* unconfirmed, int* count,
                        struct timeval* wait) {
  amqp_frame_t frame;
  int status = amqp_simple_wait_frame_noblock(conn, &frame, wait);
  if (status == AMQP_STATUS_TIMEOUT) return 1;
  if (status != AMQP_STATUS_OK || frame.frame_type != AMQP_FRAME_METHOD) {
    return status == AMQP_STATUS_OK;
  }
  switch (frame.payload.method.id) {
    case AMQP_BASIC_ACK_METHOD: {
      amqp_basic_ack_t* ack = frame.payload.method.decoded;
      settle(unconfirmed, count, ack->delivery_tag, ack->multiple, "confirm");
      return 1;
    }
    case AMQP_BASIC_NACK_METHOD: {
      amqp_basic_nack_t* nack = frame.payload.method.decoded;
      settle(unconfirmed, count, nack->delivery_tag, nack->multiple, "nack");
      return 1;
    }
    case AMQP_BASIC_RETURN_METHOD: {
      /* Unroutable (mandatory): the message follows; its basic.ack comes after it. */
      amqp_message_t message;
      if (amqp_read_message(conn, 1, &message, 0).reply_type != AMQP_RESPONSE_NORMAL) return 0;
      char fields[160];
      snprintf(fields, sizeof fields, "\"id\": \"%.*s\"", (int)message.body.len,
               (const char*)message.body.bytes);
      event("unroutable", fields);
      for (int k = 0; k < *count; ++k) {
        if (strlen(unconfirmed[k].id) == message.body.len &&
            memcmp(unconfirmed[k].id, message.body.bytes, message.body.len) == 0) {
          unconfirmed[k].id[0] = '\0'; /* its ack must not count it confirmed */
        }
      }
      amqp_destroy_message(&message);
      return 1;
    }
    default:
      return 0; /* channel.close, connection.close: give the connection up */
  }
}

static void publish(void) {
  unsigned session = 0;
  while (!told_to_stop()) {
    const char* host = nodes[rand_r(&seed) % node_count];
    ++session;
    amqp_connection_state_t conn = open_connection(host);
    char fields[200];
    snprintf(fields, sizeof fields, "\"node\": %s, \"session\": %u", host + 9, session);
    if (conn == NULL) {
      event("disconnect", fields);
      usleep(100000 + rand_r(&seed) % 200000);
      continue;
    }
    amqp_confirm_select(conn, 1);
    int ok = rpc_ok(conn);
    if (ok) event("connect", fields);
    struct pending unconfirmed[window];
    int count = 0;
    uint64_t tag = 0;
    unsigned seq = 0;
    while (ok && !told_to_stop()) {
      if (count > 0 && now() - unconfirmed[0].sent > confirm_timeout_s) break;
      if (count == window) {
        struct timeval wait = {0, 100000};
        ok = read_confirm(conn, unconfirmed, &count, &wait);
        continue;
      }
      const char* queue = queues[rand_r(&seed) % queue_count];
      struct pending* next = &unconfirmed[count];
      snprintf(next->id, sizeof next->id, "%s.%u.%u", name, session, seq++);
      amqp_basic_properties_t props;
      memset(&props, 0, sizeof props);
      props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG;
      props.delivery_mode = 2;
      props.message_id = amqp_cstring_bytes(next->id);
      snprintf(fields, sizeof fields, "\"id\": \"%s\", \"queue\": \"%s\", \"node\": %s", next->id,
               queue, host + 9);
      event("publish", fields);
      if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0, &props,
                             amqp_cstring_bytes(next->id)) != AMQP_STATUS_OK) {
        break;
      }
      next->tag = ++tag;
      next->sent = now();
      ++count;
      struct timeval zero = {0, 0};
      ok = read_confirm(conn, unconfirmed, &count, &zero);
      usleep(2000); /* about as fast as a pika publisher: the faults, not the load, are the test */
    }
    /* What is still unconfirmed stays undetermined: never resent. */
    snprintf(fields, sizeof fields, "\"node\": %s, \"session\": %u", host + 9, session);
    event("disconnect", fields);
    amqp_destroy_connection(conn);
  }
}

static void consume(void) {
  unsigned session = 0;
  while (!told_to_stop()) {
    const char* host = nodes[rand_r(&seed) % node_count];
    ++session;
    char fields[240];
    snprintf(fields, sizeof fields, "\"node\": %s, \"session\": %u", host + 9, session);
    amqp_connection_state_t conn = open_connection(host);
    if (conn == NULL) {
      event("disconnect", fields);
      usleep(100000 + rand_r(&seed) % 200000);
      continue;
    }
    amqp_basic_qos(conn, 1, 0, prefetch, 0);
    int ok = rpc_ok(conn);
    if (ok) {
      amqp_basic_consume(conn, 1, amqp_cstring_bytes(queues[0]), amqp_empty_bytes, 0, 0, 0,
                         amqp_empty_table);
      ok = rpc_ok(conn);
    }
    if (ok) event("connect", fields);
    while (ok && !told_to_stop()) {
      amqp_maybe_release_buffers(conn);
      amqp_envelope_t envelope;
      struct timeval wait = {0, 500000};
      amqp_rpc_reply_t got = amqp_consume_message(conn, &envelope, &wait, 0);
      if (got.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
          got.library_error == AMQP_STATUS_TIMEOUT) {
        continue;
      }
      if (got.reply_type != AMQP_RESPONSE_NORMAL) break; /* a cancel, a close, a lost link */
      snprintf(fields, sizeof fields,
               "\"id\": \"%.*s\", \"queue\": \"%s\", \"node\": %s, \"session\": %u, "
               "\"redelivered\": %s",
               (int)envelope.message.body.len, (const char*)envelope.message.body.bytes, queues[0],
               host + 9, session, envelope.redelivered ? "true" : "false");
      event("deliver", fields);
      snprintf(fields, sizeof fields, "\"id\": \"%.*s\"", (int)envelope.message.body.len,
               (const char*)envelope.message.body.bytes);
      if (amqp_basic_ack(conn, 1, envelope.delivery_tag, 0) == AMQP_STATUS_OK) {
        event("ack", fields);
      } else {
        event("ack-unknown", fields); /* part of it may have gone: applied or not */
        ok = 0;
      }
      amqp_destroy_envelope(&envelope);
    }
    snprintf(fields, sizeof fields, "\"node\": %s, \"session\": %u", host + 9, session);
    event("disconnect", fields);
    amqp_destroy_connection(conn);
  }
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: chaos_client publish|consume --name NAME --seed N --nodes H,H "
            "--port PORT --queues Q,Q\n");
    return 2;
  }
  for (int k = 2; k + 1 < argc; k += 2) {
    if (strcmp(argv[k], "--name") == 0) {
      name = argv[k + 1];
    } else if (strcmp(argv[k], "--seed") == 0) {
      seed = (unsigned)strtoul(argv[k + 1], NULL, 10);
    } else if (strcmp(argv[k], "--nodes") == 0) {
      node_count = split(argv[k + 1], nodes, max_nodes);
    } else if (strcmp(argv[k], "--port") == 0) {
      port = atoi(argv[k + 1]);
    } else if (strcmp(argv[k], "--queues") == 0) {
      queue_count = split(argv[k + 1], queues, max_queues);
    } else {
      fprintf(stderr, "chaos_client: unknown option %s\n", argv[k]);
      return 2;
    }
  }
  if (node_count == 0 || queue_count == 0) {
    fprintf(stderr, "chaos_client: --nodes and --queues are needed\n");
    return 2;
  }
  if (strcmp(argv[1], "publish") == 0) {
    publish();
  } else if (strcmp(argv[1], "consume") == 0) {
    consume();
  } else {
    fprintf(stderr, "chaos_client: publish or consume, not %s\n", argv[1]);
    return 2;
  }
  return 0;
}
