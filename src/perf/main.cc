// hamq-perf: a load generator for AMQP 0-9-1 brokers with the options and output of RabbitMQ's
// PerfTest, so that hamq and RabbitMQ can be measured the same way. Each producer and consumer is
// a connection driven by its own thread; a reporter prints one line per second and a summary,
// and --json writes the summary for scripts. Latency is measured from a timestamp the producer
// writes into the first 8 bytes of each body (CLOCK_MONOTONIC: producers and consumers must run
// on one machine).
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "perf/client.h"
#include "perf/histogram.h"

namespace hamq::perf {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

struct Options {
  std::vector<std::string> uris = {"amqp://guest:guest@127.0.0.1:5672/%2F"};
  int producers = 1;
  int consumers = 1;
  std::string queue;
  std::string queue_pattern;
  int queue_pattern_from = 1;
  int queue_pattern_to = 1;
  size_t size_bytes = 12;
  double rate = 0;   // per producer, msg/s; 0: as fast as possible
  int confirm = -1;  // max unconfirmed per producer; -1: no confirms
  std::vector<std::string> flags;
  bool auto_ack = false;
  int multi_ack_every = 0;
  int qos = 0;
  int time_s = 0;
  uint64_t producer_messages = 0;
  uint64_t consumer_messages = 0;
  std::string exchange = "direct";
  std::string exchange_type = "direct";
  std::string routing_key;
  std::string queue_args;
  bool auto_delete = true;
  std::string json_path;
  std::string id;
};

// An interval histogram a worker records into and the reporter swaps out each second.
struct SharedHistogram {
  std::mutex mutex;
  LatencyHistogram interval;
  void record(uint64_t ns) {
    std::lock_guard lock(mutex);
    interval.record(ns);
  }
  void take(LatencyHistogram& into) {
    std::lock_guard lock(mutex);
    into.merge(interval);
    interval.clear();
  }
};

struct Stats {
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> confirmed{0};
  std::atomic<uint64_t> nacked{0};
  std::atomic<uint64_t> returned{0};
  std::atomic<uint64_t> received{0};
  std::deque<SharedHistogram> consumer_latency;  // one per consumer
  std::deque<SharedHistogram> confirm_latency;   // one per producer
  std::atomic<bool> stop{false};
  std::atomic<int> producers_done{0};
  std::atomic<int> consumers_done{0};
  std::atomic<bool> failed{false};
  std::mutex error_mutex;
  std::string error;

  void fail(const std::string& what) {
    std::lock_guard lock(error_mutex);
    if (error.empty()) error = what;
    failed = true;
    stop = true;
  }
};

Result<amqp::FieldTable, std::string> parse_queue_args(const std::string& text) {
  amqp::FieldTable table;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos) return unexpected("queue argument without '=': " + item);
    std::string key = item.substr(0, eq);
    std::string value = item.substr(eq + 1);
    char* end = nullptr;
    long long number = std::strtoll(value.c_str(), &end, 10);
    if (!value.empty() && *end == '\0') {
      table.entries.emplace_back(key, static_cast<int64_t>(number));
    } else if (value == "true" || value == "false") {
      table.entries.emplace_back(key, value == "true");
    } else {
      table.entries.emplace_back(key, value);
    }
  }
  return table;
}

std::vector<std::string> queue_names(const Options& o) {
  if (!o.queue_pattern.empty()) {
    std::vector<std::string> names;
    for (int i = o.queue_pattern_from; i <= o.queue_pattern_to; ++i) {
      char name[256];
      std::snprintf(name, sizeof name, o.queue_pattern.c_str(), i);
      names.emplace_back(name);
    }
    return names;
  }
  if (!o.queue.empty()) return {o.queue};
  return {};
}

Result<void, std::string> declare_topology(AmqpClient& client, const Options& o,
                                           const amqp::FieldTable& arguments,
                                           const std::string& queue, std::string* declared) {
  if (!o.exchange.empty()) {
    auto e = client.call(amqp::ExchangeDeclare{
        0, o.exchange, o.exchange_type, false, true, false, false, false, {}});
    if (!e.ok()) return unexpected(e.error());
  }
  bool server_named = queue.empty();
  amqp::QueueDeclare declare;
  declare.queue = queue;
  declare.durable = !server_named;
  declare.exclusive = server_named;
  declare.auto_delete = server_named || o.auto_delete;
  declare.arguments = arguments;
  auto q = client.call(declare);
  if (!q.ok()) return unexpected(q.error());
  auto* ok = std::get_if<amqp::QueueDeclareOk>(&q.value());
  if (ok == nullptr) return unexpected(std::string("unexpected reply to queue.declare"));
  *declared = ok->queue;
  if (!o.exchange.empty()) {
    std::string key = server_named ? o.routing_key : ok->queue;
    auto b = client.call(amqp::QueueBind{0, ok->queue, o.exchange, key, false, {}});
    if (!b.ok()) return unexpected(b.error());
  }
  return Ok{};
}

void run_consumer(const Options& o, const Endpoint& endpoint, const std::string& queue,
                  const amqp::FieldTable& arguments, Stats& stats, SharedHistogram& latency,
                  std::atomic<int>& ready) {
  AmqpClient client;
  if (auto opened = client.open(endpoint); !opened.ok()) return stats.fail(opened.error());
  std::string name;
  if (auto declared = declare_topology(client, o, arguments, queue, &name); !declared.ok()) {
    return stats.fail(declared.error());
  }
  if (o.qos > 0) {
    if (auto q = client.call(amqp::BasicQos{0, static_cast<uint16_t>(o.qos), false}); !q.ok()) {
      return stats.fail(q.error());
    }
  }
  amqp::BasicConsume consume;
  consume.queue = name;
  consume.no_ack = o.auto_ack;
  if (auto c = client.call(consume); !c.ok()) return stats.fail(c.error());
  ++ready;
  uint64_t received = 0;
  uint64_t unacked = 0;
  uint64_t last_tag = 0;
  auto on_method = [](const amqp::Method&) {};
  auto on_message = [&](Message& message) {
    auto* deliver = std::get_if<amqp::BasicDeliver>(&message.method);
    if (deliver == nullptr) return;
    if (message.body.size() >= 8) {
      uint64_t sent_ns = 0;
      std::memcpy(&sent_ns, message.body.data(), 8);
      uint64_t now = monotonic_ns();
      if (now > sent_ns) latency.record(now - sent_ns);
    }
    ++received;
    stats.received.fetch_add(1, std::memory_order_relaxed);
    if (!o.auto_ack) {
      last_tag = deliver->delivery_tag;
      ++unacked;
      if (o.multi_ack_every <= 1) {
        client.send(amqp::BasicAck{last_tag, false});
        unacked = 0;
      } else if (unacked >= static_cast<uint64_t>(o.multi_ack_every)) {
        client.send(amqp::BasicAck{last_tag, true});
        unacked = 0;
      }
    }
  };
  while (!stats.stop) {
    if (auto polled = client.poll(100, on_method, on_message); !polled.ok()) {
      return stats.fail(polled.error());
    }
    if (unacked > 0 && client.buffered_output() == 0) {
      // Nothing more arrived in this read: ack what is held so the broker is not starved.
      client.send(amqp::BasicAck{last_tag, true});
      unacked = 0;
    }
    if (auto sent = client.flush(false); !sent.ok()) return stats.fail(sent.error());
    if (o.consumer_messages > 0 && received >= o.consumer_messages) break;
  }
  ++stats.consumers_done;
}

void run_producer(const Options& o, const Endpoint& endpoint, const std::string& queue,
                  const amqp::FieldTable& arguments, Stats& stats, SharedHistogram& latency) {
  AmqpClient client;
  if (auto opened = client.open(endpoint); !opened.ok()) return stats.fail(opened.error());
  std::string routing_key = o.routing_key;
  std::string exchange = o.exchange;
  if (!queue.empty()) {
    std::string name;
    if (auto declared = declare_topology(client, o, arguments, queue, &name); !declared.ok()) {
      return stats.fail(declared.error());
    }
    routing_key = name;
  }
  bool confirms = o.confirm >= 0;
  if (confirms) {
    if (auto c = client.call(amqp::ConfirmSelect{false}); !c.ok()) return stats.fail(c.error());
  }
  bool persistent = std::find(o.flags.begin(), o.flags.end(), "persistent") != o.flags.end();
  bool mandatory = std::find(o.flags.begin(), o.flags.end(), "mandatory") != o.flags.end();
  amqp::BasicProperties properties;
  properties.delivery_mode = persistent ? 2 : 1;
  std::string body(std::max<size_t>(o.size_bytes, 0), 'x');
  std::deque<std::pair<uint64_t, uint64_t>> outstanding;  // (seq, sent_ns)
  uint64_t seq = 0;
  uint64_t confirmed_through = 0;
  auto on_method = [&](const amqp::Method& method) {
    uint64_t tag = 0;
    bool multiple = false;
    bool ack = true;
    if (auto* a = std::get_if<amqp::BasicAck>(&method)) {
      tag = a->delivery_tag;
      multiple = a->multiple;
    } else if (auto* n = std::get_if<amqp::BasicNack>(&method)) {
      tag = n->delivery_tag;
      multiple = n->multiple;
      ack = false;
    } else {
      return;
    }
    uint64_t now = monotonic_ns();
    while (!outstanding.empty() &&
           (multiple ? outstanding.front().first <= tag : outstanding.front().first == tag)) {
      latency.record(now - outstanding.front().second);
      outstanding.pop_front();
      (ack ? stats.confirmed : stats.nacked).fetch_add(1, std::memory_order_relaxed);
    }
    if (!multiple && !outstanding.empty() && outstanding.front().first != tag) {
      // An out-of-order single confirm: find it.
      for (auto it = outstanding.begin(); it != outstanding.end(); ++it) {
        if (it->first == tag) {
          latency.record(now - it->second);
          outstanding.erase(it);
          (ack ? stats.confirmed : stats.nacked).fetch_add(1, std::memory_order_relaxed);
          break;
        }
      }
    }
    confirmed_through = std::max(confirmed_through, tag);
  };
  auto on_message = [&](Message& message) {
    if (std::holds_alternative<amqp::BasicReturn>(message.method)) {
      stats.returned.fetch_add(1, std::memory_order_relaxed);
    }
  };
  auto start = Clock::now();
  uint64_t sent = 0;
  constexpr uint64_t batch_max = 64;
  while (!stats.stop && (o.producer_messages == 0 || sent < o.producer_messages)) {
    uint64_t due = batch_max;
    if (o.rate > 0) {
      double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
      uint64_t allowed = static_cast<uint64_t>(elapsed * o.rate) + 1;
      due = allowed > sent ? std::min(allowed - sent, batch_max) : 0;
    }
    if (o.producer_messages > 0) due = std::min(due, o.producer_messages - sent);
    if (confirms && o.confirm > 0) {
      uint64_t room = outstanding.size() < static_cast<size_t>(o.confirm)
                          ? static_cast<uint64_t>(o.confirm) - outstanding.size()
                          : 0;
      due = std::min(due, room);
    }
    for (uint64_t i = 0; i < due; ++i) {
      uint64_t now = monotonic_ns();
      if (body.size() >= 8) std::memcpy(body.data(), &now, 8);
      client.publish(exchange, routing_key, properties, body, mandatory);
      if (confirms) outstanding.emplace_back(++seq, now);
    }
    sent += due;
    stats.sent.fetch_add(due, std::memory_order_relaxed);
    if (auto flushed = client.flush(false); !flushed.ok()) return stats.fail(flushed.error());
    // Block only when there is nothing to send: waiting for confirms, the rate or the socket.
    bool blocked = due == 0 || client.buffered_output() > (1u << 20);
    int wait_ms = blocked ? 1 : 0;
    if (auto polled = client.poll(wait_ms, on_method, on_message); !polled.ok()) {
      return stats.fail(polled.error());
    }
  }
  // Wait for the last confirms.
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (confirms && !outstanding.empty() && !stats.stop && Clock::now() < deadline) {
    if (auto polled = client.poll(10, on_method, on_message); !polled.ok()) {
      return stats.fail(polled.error());
    }
  }
  if (auto flushed = client.flush(true); !flushed.ok()) return stats.fail(flushed.error());
  ++stats.producers_done;
}

std::string latency_text(const LatencyHistogram& h, bool with_max) {
  auto us = [](uint64_t ns) { return std::to_string(ns / 1000); };
  std::string text = us(h.min()) + "/" + us(h.quantile(0.5)) + "/" + us(h.quantile(0.75)) + "/" +
                     us(h.quantile(0.95)) + "/" + us(h.quantile(0.99));
  if (with_max) text += "/" + us(h.max());
  return text + " µs";
}

std::string latency_json(const LatencyHistogram& h) {
  auto us = [](uint64_t ns) { return std::to_string(static_cast<double>(ns) / 1000.0); };
  return "{\"count\": " + std::to_string(h.count()) + ", \"min\": " + us(h.min()) +
         ", \"median\": " + us(h.quantile(0.5)) + ", \"p75\": " + us(h.quantile(0.75)) +
         ", \"p95\": " + us(h.quantile(0.95)) + ", \"p99\": " + us(h.quantile(0.99)) +
         ", \"max\": " + us(h.max()) + "}";
}

int run(Options o) {
  if (o.id.empty()) {
    o.id = "test-" +
           std::to_string(std::chrono::system_clock::now().time_since_epoch().count() % 1000000);
  }
  if (o.routing_key.empty()) {
    std::mt19937_64 random(std::random_device{}());
    o.routing_key = "perf-" + std::to_string(random());
  }
  std::vector<Endpoint> endpoints;
  for (const auto& uri : o.uris) {
    auto endpoint = parse_uri(uri);
    if (!endpoint.ok()) {
      std::fprintf(stderr, "hamq-perf: %s\n", endpoint.error().c_str());
      return 2;
    }
    endpoints.push_back(endpoint.value());
  }
  auto arguments = parse_queue_args(o.queue_args);
  if (!arguments.ok()) {
    std::fprintf(stderr, "hamq-perf: %s\n", arguments.error().c_str());
    return 2;
  }
  std::vector<std::string> queues = queue_names(o);
  Stats stats;
  for (int i = 0; i < o.consumers; ++i) stats.consumer_latency.emplace_back();
  for (int i = 0; i < o.producers; ++i) stats.confirm_latency.emplace_back();

  std::vector<std::thread> threads;
  std::atomic<int> consumers_ready{0};
  for (int i = 0; i < o.consumers; ++i) {
    std::string queue = queues.empty() ? "" : queues[i % queues.size()];
    threads.emplace_back(run_consumer, std::cref(o), std::cref(endpoints[i % endpoints.size()]),
                         queue, std::cref(arguments.value()), std::ref(stats),
                         std::ref(stats.consumer_latency[i]), std::ref(consumers_ready));
  }
  while (consumers_ready < o.consumers && !stats.failed) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto start = Clock::now();
  for (int i = 0; i < o.producers && !stats.failed; ++i) {
    std::string queue = queues.empty() ? "" : queues[i % queues.size()];
    threads.emplace_back(run_producer, std::cref(o), std::cref(endpoints[i % endpoints.size()]),
                         queue, std::cref(arguments.value()), std::ref(stats),
                         std::ref(stats.confirm_latency[i]));
  }

  LatencyHistogram total_consumer;
  LatencyHistogram total_confirm;
  uint64_t last_sent = 0, last_confirmed = 0, last_nacked = 0, last_received = 0;
  auto last_tick = start;
  int seconds = 0;
  auto finished = [&] {
    if (stats.stop) return true;
    if (o.time_s > 0 && seconds >= o.time_s) return true;
    bool producers_done = o.producer_messages > 0 && stats.producers_done == o.producers;
    bool consumers_done =
        o.consumers == 0 || (o.consumer_messages > 0 ? stats.consumers_done == o.consumers
                                                     : stats.received >= stats.sent.load());
    return producers_done && consumers_done;
  };
  while (!finished()) {
    std::this_thread::sleep_until(last_tick + std::chrono::seconds(1));
    auto now = Clock::now();
    double interval = std::chrono::duration<double>(now - last_tick).count();
    last_tick = now;
    ++seconds;
    LatencyHistogram consumer, confirm;
    for (auto& h : stats.consumer_latency) h.take(consumer);
    for (auto& h : stats.confirm_latency) h.take(confirm);
    total_consumer.merge(consumer);
    total_confirm.merge(confirm);
    uint64_t sent = stats.sent, confirmed = stats.confirmed, nacked = stats.nacked,
             received = stats.received;
    auto rate = [&](uint64_t now_count, uint64_t before) {
      return std::to_string(
          static_cast<uint64_t>(static_cast<double>(now_count - before) / interval));
    };
    std::string line =
        "id: " + o.id + ", time " +
        std::to_string(std::chrono::duration<double>(now - start).count()).substr(0, 5) +
        " s, sent: " + rate(sent, last_sent) + " msg/s";
    if (o.confirm >= 0) {
      line += ", confirmed: " + rate(confirmed, last_confirmed) +
              " msg/s, nacked: " + rate(nacked, last_nacked) + " msg/s";
    }
    line += ", received: " + rate(received, last_received) + " msg/s";
    line += ", min/median/75th/95th/99th consumer latency: " + latency_text(consumer, false);
    if (o.confirm >= 0) line += ", confirm latency: " + latency_text(confirm, false);
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    last_sent = sent;
    last_confirmed = confirmed;
    last_nacked = nacked;
    last_received = received;
  }
  stats.stop = true;
  for (auto& t : threads) t.join();
  for (auto& h : stats.consumer_latency) h.take(total_consumer);
  for (auto& h : stats.confirm_latency) h.take(total_confirm);
  double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (stats.failed) {
    std::fprintf(stderr, "hamq-perf: %s\n", stats.error.c_str());
    return 1;
  }
  double send_rate = static_cast<double>(stats.sent) / elapsed;
  double receive_rate = static_cast<double>(stats.received) / elapsed;
  std::printf("id: %s, sending rate avg: %.0f msg/s\n", o.id.c_str(), send_rate);
  std::printf("id: %s, receiving rate avg: %.0f msg/s\n", o.id.c_str(), receive_rate);
  std::printf("id: %s, consumer latency min/median/75th/95th/99th/max %s\n", o.id.c_str(),
              latency_text(total_consumer, true).c_str());
  if (o.confirm >= 0) {
    std::printf("id: %s, confirm latency min/median/75th/95th/99th/max %s\n", o.id.c_str(),
                latency_text(total_confirm, true).c_str());
  }
  if (!o.json_path.empty()) {
    std::ofstream json(o.json_path);
    json << "{\"id\": \"" << o.id << "\", \"duration_s\": " << elapsed
         << ", \"sent\": " << stats.sent << ", \"confirmed\": " << stats.confirmed
         << ", \"nacked\": " << stats.nacked << ", \"returned\": " << stats.returned
         << ", \"received\": " << stats.received << ", \"send_rate\": " << send_rate
         << ", \"receive_rate\": " << receive_rate
         << ", \"consumer_latency_us\": " << latency_json(total_consumer)
         << ", \"confirm_latency_us\": " << latency_json(total_confirm) << "}\n";
  }
  return 0;
}

}  // namespace
}  // namespace hamq::perf

int main(int argc, char** argv) {
  hamq::perf::Options o;
  CLI::App app{"hamq-perf: load generator for AMQP 0-9-1 brokers (PerfTest's options)",
               "hamq-perf"};
  app.set_help_flag("--help", "Print this help and exit");
  app.add_option("-h,--uri", o.uris, "Broker URIs, amqp://user:pass@host:port/vhost (repeatable)")
      ->capture_default_str();
  app.add_option("-x,--producers", o.producers, "Producer count")->capture_default_str();
  app.add_option("-y,--consumers", o.consumers, "Consumer count")->capture_default_str();
  app.add_option("-u,--queue", o.queue,
                 "Queue name (default: one server-named queue per consumer)");
  app.add_option("--queue-pattern", o.queue_pattern, "Queue name pattern, e.g. 'perf-%d'");
  app.add_option("--queue-pattern-from", o.queue_pattern_from, "First queue number");
  app.add_option("--queue-pattern-to", o.queue_pattern_to, "Last queue number");
  app.add_option("-s,--size", o.size_bytes, "Message size in bytes")->capture_default_str();
  app.add_option("-r,--rate", o.rate, "Publishing rate per producer, msg/s (0: unlimited)");
  app.add_option("-c,--confirm", o.confirm,
                 "Publisher confirms, with at most this many unconfirmed");
  app.add_option("-f,--flag", o.flags, "Message flags: persistent, mandatory (repeatable)");
  app.add_flag("-a,--autoack", o.auto_ack, "Consumers use automatic acknowledgement");
  app.add_option("-A,--multi-ack-every", o.multi_ack_every, "Acknowledge with multiple every N");
  app.add_option("-q,--qos", o.qos, "Consumer prefetch count (0: unlimited)");
  app.add_option("-z,--time", o.time_s, "Run duration in seconds (0: until counts are reached)");
  app.add_option("-C,--pmessages", o.producer_messages, "Messages per producer (0: unlimited)");
  app.add_option("-D,--cmessages", o.consumer_messages, "Messages per consumer (0: unlimited)");
  app.add_option("-e,--exchange", o.exchange, "Exchange")->capture_default_str();
  app.add_option("-t,--type", o.exchange_type, "Exchange type")->capture_default_str();
  app.add_option("-k,--routing-key", o.routing_key, "Routing key (default: random)");
  app.add_option("--queue-args", o.queue_args, "Queue arguments, e.g. x-queue-type=quorum");
  app.add_option("--auto-delete", o.auto_delete, "Named queues are auto-delete")
      ->capture_default_str();
  app.add_option("--json", o.json_path, "Write the summary as JSON to this file");
  app.add_option("--id", o.id, "Test id printed on every line");
  CLI11_PARSE(app, argc, argv);
  if (o.time_s == 0 && o.producer_messages == 0) {
    std::fprintf(stderr, "hamq-perf: give a duration (-z) or a message count (-C)\n");
    return 2;
  }
  return hamq::perf::run(o);
}
