/* amqp-load: a load client that is not hamq's own code, for the benchmarks. It speaks AMQP
 * through rabbitmq-c (librabbitmq), which writes each publish with its own system call, as
 * applications' clients do.
 *
 *   amqp-load HOST PORT QUEUE SECONDS [--size BYTES] [--window N] [--prefetch N]
 *             [--ack-every N] [--persistent] [--warmup SECONDS]
 *
 * One publisher and one consumer, each on its own connection and thread. The publisher keeps at
 * most N messages unconfirmed (publisher confirms; --window 0 publishes without confirms); the
 * consumer takes up to --prefetch unacknowledged and acknowledges every --ack-every messages
 * (multiple). It prints one JSON object: messages received per second between the warm-up
 * (default 2 s) and the end, and the counts. The queue must exist. Exit status 1 on any error.
 *
 * Built by CMake (target amqp-load) when rabbitmq-c is there, or by hand:
 *   cc -O2 -o amqp-load bench/amqp_load.c -lrabbitmq -lpthread
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

struct options {
  const char* host;
  int port;
  const char* queue;
  double seconds;
  double warmup;
  size_t size;
  unsigned window;
  unsigned prefetch;
  unsigned ack_every;
  int persistent;
};

struct counts {
  atomic_ullong published;
  atomic_ullong confirmed;
  atomic_ullong nacked;
  atomic_ullong received;
  atomic_ullong received_in_window;
  atomic_int failed;
};

static struct options opts;
static struct counts counts;
static double started;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int check(amqp_rpc_reply_t reply, const char* what) {
  if (reply.reply_type == AMQP_RESPONSE_NORMAL) return 1;
  if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
    fprintf(stderr, "amqp-load: %s: %s\n", what, amqp_error_string2(reply.library_error));
  } else {
    fprintf(stderr, "amqp-load: %s: the server closed the channel or connection\n", what);
  }
  return 0;
}

static amqp_connection_state_t open_connection(void) {
  amqp_connection_state_t conn = amqp_new_connection();
  amqp_socket_t* socket = amqp_tcp_socket_new(conn);
  if (socket == NULL || amqp_socket_open(socket, opts.host, opts.port) != AMQP_STATUS_OK) {
    fprintf(stderr, "amqp-load: cannot connect to %s:%d\n", opts.host, opts.port);
    amqp_destroy_connection(conn);
    return NULL;
  }
  if (!check(amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"),
             "login") ||
      (amqp_channel_open(conn, 1), !check(amqp_get_rpc_reply(conn), "channel.open"))) {
    amqp_destroy_connection(conn);
    return NULL;
  }
  return conn;
}

static void close_connection(amqp_connection_state_t conn) {
  amqp_channel_close(conn, 1, AMQP_REPLY_SUCCESS);
  amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
  amqp_destroy_connection(conn);
}

/* Reads what the broker sent (confirms); waits at most `timeout` (NULL: until a frame). */
static int read_confirms(amqp_connection_state_t conn, struct timeval* timeout) {
  amqp_frame_t frame;
  int status = amqp_simple_wait_frame_noblock(conn, &frame, timeout);
  if (status == AMQP_STATUS_TIMEOUT) return 1;
  if (status != AMQP_STATUS_OK) {
    fprintf(stderr, "amqp-load: publisher: %s\n", amqp_error_string2(status));
    return 0;
  }
  if (frame.frame_type != AMQP_FRAME_METHOD) return 1;
  if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD ||
      frame.payload.method.id == AMQP_BASIC_NACK_METHOD) {
    uint64_t tag;
    int multiple;
    if (frame.payload.method.id == AMQP_BASIC_ACK_METHOD) {
      amqp_basic_ack_t* ack = frame.payload.method.decoded;
      tag = ack->delivery_tag;
      multiple = ack->multiple;
    } else {
      amqp_basic_nack_t* nack = frame.payload.method.decoded;
      tag = nack->delivery_tag;
      multiple = nack->multiple;
      atomic_fetch_add(&counts.nacked, 1);
    }
    /* Confirms come in publish order here: the highest tag settles all below it. */
    unsigned long long settled = atomic_load(&counts.confirmed);
    if (tag > settled) atomic_store(&counts.confirmed, multiple ? tag : settled + 1);
    return 1;
  }
  if (frame.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD ||
      frame.payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
    fprintf(stderr, "amqp-load: publisher: the server closed the channel or connection\n");
    return 0;
  }
  return 1;
}

static void* publisher(void* unused) {
  (void)unused;
  amqp_connection_state_t conn = open_connection();
  if (conn == NULL) {
    atomic_store(&counts.failed, 1);
    return NULL;
  }
  if (opts.window > 0) {
    amqp_confirm_select(conn, 1);
    if (!check(amqp_get_rpc_reply(conn), "confirm.select")) {
      atomic_store(&counts.failed, 1);
      amqp_destroy_connection(conn);
      return NULL;
    }
  }
  char* body = malloc(opts.size > 0 ? opts.size : 1);
  memset(body, 'x', opts.size);
  amqp_bytes_t message = {opts.size, body};
  amqp_basic_properties_t props;
  memset(&props, 0, sizeof props);
  props._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
  props.delivery_mode = opts.persistent ? 2 : 1;
  double end = started + opts.seconds;
  int ok = 1;
  while (ok && now() < end) {
    unsigned long long published = atomic_load(&counts.published);
    if (opts.window == 0 || published - atomic_load(&counts.confirmed) < opts.window) {
      if (amqp_basic_publish(conn, 1, amqp_empty_bytes, amqp_cstring_bytes(opts.queue), 0, 0,
                             &props, message) != AMQP_STATUS_OK) {
        fprintf(stderr, "amqp-load: publish failed\n");
        ok = 0;
        break;
      }
      atomic_fetch_add(&counts.published, 1);
      if (opts.window > 0) {
        struct timeval zero = {0, 0};
        ok = read_confirms(conn, &zero);
      }
    } else {
      struct timeval wait = {0, 100000};
      ok = read_confirms(conn, &wait);
    }
  }
  free(body);
  if (!ok) atomic_store(&counts.failed, 1);
  close_connection(conn);
  return NULL;
}

static void* consumer(void* unused) {
  (void)unused;
  amqp_connection_state_t conn = open_connection();
  if (conn == NULL) {
    atomic_store(&counts.failed, 1);
    return NULL;
  }
  amqp_basic_qos(conn, 1, 0, (uint16_t)opts.prefetch, 0);
  amqp_basic_consume(conn, 1, amqp_cstring_bytes(opts.queue), amqp_empty_bytes, 0, 0, 0,
                     amqp_empty_table);
  if (!check(amqp_get_rpc_reply(conn), "basic.consume")) {
    atomic_store(&counts.failed, 1);
    amqp_destroy_connection(conn);
    return NULL;
  }
  double window_start = started + opts.warmup;
  double end = started + opts.seconds;
  unsigned since_ack = 0;
  for (;;) {
    double t = now();
    if (t >= end) break;
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t envelope;
    struct timeval wait = {0, 100000};
    amqp_rpc_reply_t reply = amqp_consume_message(conn, &envelope, &wait, 0);
    if (reply.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        reply.library_error == AMQP_STATUS_TIMEOUT) {
      continue;
    }
    if (reply.reply_type != AMQP_RESPONSE_NORMAL) {
      check(reply, "consume");
      atomic_store(&counts.failed, 1);
      break;
    }
    atomic_fetch_add(&counts.received, 1);
    t = now();
    if (t >= window_start && t < end) atomic_fetch_add(&counts.received_in_window, 1);
    if (++since_ack >= opts.ack_every) {
      amqp_basic_ack(conn, 1, envelope.delivery_tag, 1);
      since_ack = 0;
    }
    amqp_destroy_envelope(&envelope);
  }
  close_connection(conn);
  return NULL;
}

static void usage(void) {
  fprintf(stderr,
          "usage: amqp-load HOST PORT QUEUE SECONDS [--size BYTES] [--window N] "
          "[--prefetch N] [--ack-every N] [--persistent] [--warmup SECONDS]\n");
  exit(2);
}

int main(int argc, char** argv) {
  if (argc < 5) usage();
  opts.host = argv[1];
  opts.port = atoi(argv[2]);
  opts.queue = argv[3];
  opts.seconds = atof(argv[4]);
  opts.warmup = 2;
  opts.size = 16;
  opts.window = 1000;
  opts.prefetch = 1000;
  opts.ack_every = 1;
  for (int i = 5; i < argc; ++i) {
    const char* flag = argv[i];
    if (strcmp(flag, "--persistent") == 0) {
      opts.persistent = 1;
      continue;
    }
    if (i + 1 >= argc) usage();
    const char* value = argv[++i];
    if (strcmp(flag, "--size") == 0) {
      opts.size = (size_t)strtoul(value, NULL, 10);
    } else if (strcmp(flag, "--window") == 0) {
      opts.window = (unsigned)strtoul(value, NULL, 10);
    } else if (strcmp(flag, "--prefetch") == 0) {
      opts.prefetch = (unsigned)strtoul(value, NULL, 10);
    } else if (strcmp(flag, "--ack-every") == 0) {
      opts.ack_every = (unsigned)strtoul(value, NULL, 10);
    } else if (strcmp(flag, "--warmup") == 0) {
      opts.warmup = atof(value);
    } else {
      usage();
    }
  }
  if (opts.port <= 0 || opts.seconds <= opts.warmup || opts.ack_every == 0 ||
      opts.prefetch > 65535) {
    usage();
  }
  started = now();
  pthread_t threads[2];
  pthread_create(&threads[0], NULL, consumer, NULL);
  pthread_create(&threads[1], NULL, publisher, NULL);
  pthread_join(threads[0], NULL);
  pthread_join(threads[1], NULL);
  double measured = opts.seconds - opts.warmup;
  printf(
      "{\"received_per_s\": %.1f, \"received\": %llu, \"published\": %llu, \"confirmed\": %llu, "
      "\"nacked\": %llu}\n",
      (double)atomic_load(&counts.received_in_window) / measured, atomic_load(&counts.received),
      atomic_load(&counts.published), atomic_load(&counts.confirmed), atomic_load(&counts.nacked));
  return atomic_load(&counts.failed) ? 1 : 0;
}
