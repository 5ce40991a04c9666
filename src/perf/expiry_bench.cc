// hamq-expiry-bench: how a broker keeps time for many messages. It publishes N messages, each
// with its own random TTL (`expiration`) into a queue whose dead letters it consumes, or each
// with its own random `x-delay` into a delayed exchange whose queue it consumes, and measures
// how late each message arrives after its due time, while sampling the broker's CPU and memory
// once a second (with --server-pid). See bench/README.md.
//
//   hamq-expiry-bench --port 5672 --server-pid 1234 --messages 1000000 --min-ms 5000 --max-ms 60000
//   hamq-expiry-bench ... --delayed
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "perf/client.h"
#include "perf/histogram.h"

namespace {

using hamq::perf::AmqpClient;

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

struct ProcessSample {
  double cpu_seconds = 0;
  double rss_mb = 0;
};

// utime+stime and RSS of a process, from /proc.
ProcessSample sample_process(int pid) {
  ProcessSample sample;
  if (pid <= 0) return sample;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t after_name = text.rfind(')');
  if (after_name == std::string::npos) return sample;
  std::istringstream fields(text.substr(after_name + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  long rss_pages = 0;
  for (int i = 3; fields >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
    if (i == 24) {
      rss_pages = std::stol(field);
      break;
    }
  }
  double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  sample.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  sample.rss_mb = static_cast<double>(rss_pages) * static_cast<double>(sysconf(_SC_PAGESIZE)) / 1e6;
  return sample;
}

bool ok(const hamq::Result<hamq::amqp::Method, std::string>& reply, const char* what) {
  if (!reply.ok()) std::fprintf(stderr, "%s failed: %s\n", what, reply.error().c_str());
  return reply.ok();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hamq-expiry-bench: on-time expiry and delays of many messages"};
  hamq::perf::Endpoint endpoint;
  int server_pid = 0;
  uint64_t messages = 1'000'000;
  uint64_t min_ms = 5'000;
  uint64_t max_ms = 60'000;
  bool delayed = false;
  uint64_t seed = 1;
  uint64_t rate = 20'000;
  app.add_option("--port", endpoint.port)->capture_default_str();
  app.add_option("--server-pid", server_pid, "the broker, for CPU and memory samples");
  app.add_option("--messages", messages)->capture_default_str();
  app.add_option("--min-ms", min_ms, "shortest TTL or delay")->capture_default_str();
  app.add_option("--max-ms", max_ms, "longest TTL or delay")->capture_default_str();
  app.add_option("--seed", seed)->capture_default_str();
  app.add_option("--rate", rate,
                 "messages per second to publish (the broker must keep up: a "
                 "message's due time is taken when it is written)")
      ->capture_default_str();
  app.add_flag("--delayed", delayed, "x-delay on a delayed exchange instead of expiration");
  bool durable = false;
  app.add_flag("--durable", durable,
               "durable exchanges and queues (messages on disk, an index entry each in memory)");
  CLI11_PARSE(app, argc, argv);

  AmqpClient client;
  if (auto opened = client.open(endpoint); !opened.ok()) {
    std::fprintf(stderr, "cannot connect: %s\n", opened.error().c_str());
    return 1;
  }
  namespace amqp = hamq::amqp;
  std::string target_exchange;
  std::string consume_from;
  if (delayed) {
    amqp::FieldTable arguments;
    arguments.entries.emplace_back("x-delayed-type", std::string("fanout"));
    if (!ok(client.call(amqp::ExchangeDeclare{0, "bench.delayed", "x-delayed-message", false,
                                              durable, false, false, false, arguments}),
            "exchange.declare")) {
      return 1;
    }
    target_exchange = "bench.delayed";
    consume_from = "bench.due";
  } else {
    if (!ok(client.call(amqp::ExchangeDeclare{
                0, "bench.dlx", "fanout", false, durable, false, false, false, {}}),
            "exchange.declare")) {
      return 1;
    }
    amqp::FieldTable arguments;
    arguments.entries.emplace_back("x-dead-letter-exchange", std::string("bench.dlx"));
    if (!ok(client.call(
                amqp::QueueDeclare{0, "bench.ttl", false, durable, false, false, false, arguments}),
            "queue.declare")) {
      return 1;
    }
    consume_from = "bench.due";
  }
  if (!ok(client.call(amqp::QueueDeclare{0, consume_from, false, durable, false, false, false, {}}),
          "queue.declare") ||
      !ok(client.call(amqp::QueueBind{
              0, consume_from, delayed ? "bench.delayed" : "bench.dlx", "", false, {}}),
          "queue.bind") ||
      !ok(client.call(amqp::BasicConsume{0, consume_from, "bench", false, true, false, false, {}}),
          "basic.consume")) {
    return 1;
  }

  ProcessSample before = sample_process(server_pid);
  std::mt19937_64 random(seed);
  std::uniform_int_distribution<uint64_t> ttl_ms(min_ms, max_ms);
  hamq::perf::LatencyHistogram lateness_total;
  hamq::perf::LatencyHistogram lateness_second;
  uint64_t published = 0;
  uint64_t arrived = 0;
  uint64_t early = 0;
  uint64_t started_ns = monotonic_ns();
  uint64_t next_report_ns = started_ns + 1'000'000'000ULL;
  ProcessSample last = before;
  double rss_peak_mb = before.rss_mb;
  std::printf("# %s of %" PRIu64 " messages, %" PRIu64 "-%" PRIu64 " ms; broker before: %.1f MB\n",
              delayed ? "delays" : "TTLs", messages, min_ms, max_ms, before.rss_mb);
  std::printf(
      "#   s  published    waiting   arrived/s  cpu%%   rss_MB  late_p50_ms  late_p99_ms\n");
  uint64_t arrived_last = 0;
  auto on_message = [&](hamq::perf::Message& message) {
    if (message.body.size() < 8) return;
    uint64_t due_ns = 0;
    std::memcpy(&due_ns, message.body.data(), 8);
    uint64_t now = monotonic_ns();
    ++arrived;
    if (now + 1'000'000 < due_ns) ++early;  // more than 1 ms early: a bug
    uint64_t late_ns = now > due_ns ? now - due_ns : 0;
    lateness_total.record(late_ns);
    lateness_second.record(late_ns);
  };
  while (arrived < messages) {
    // Publish in small bursts, only when the last ones have left: a message's due time is taken
    // when it is written, so it must not wait in our buffer.
    uint64_t allowed = rate * (monotonic_ns() - started_ns) / 1'000'000'000ULL + 1;
    int burst_size = client.buffered_output() < 16384 && published < allowed ? 200 : 0;
    for (int burst = 0; burst < burst_size && published < messages; ++burst) {
      uint64_t wait_ms = ttl_ms(random);
      uint64_t due_ns = monotonic_ns() + wait_ms * 1'000'000ULL;
      char body[16] = {};
      std::memcpy(body, &due_ns, 8);
      amqp::BasicProperties properties;
      if (delayed) {
        properties.headers.emplace();
        properties.headers->entries.emplace_back("x-delay", static_cast<int32_t>(wait_ms));
        client.publish(target_exchange, "", properties, std::string_view(body, sizeof body), false);
      } else {
        properties.expiration = std::to_string(wait_ms);
        client.publish("", "bench.ttl", properties, std::string_view(body, sizeof body), false);
      }
      ++published;
    }
    if (auto flushed = client.flush(false); !flushed.ok()) {
      std::fprintf(stderr, "write failed: %s\n", flushed.error().c_str());
      return 1;
    }
    auto polled = client.poll(
        published < messages ? 1 : 100, [](const amqp::Method&) {}, on_message);
    if (!polled.ok()) {
      std::fprintf(stderr, "read failed: %s\n", polled.error().c_str());
      return 1;
    }
    uint64_t now = monotonic_ns();
    if (now >= next_report_ns) {
      ProcessSample sample = sample_process(server_pid);
      rss_peak_mb = std::max(rss_peak_mb, sample.rss_mb);
      std::printf("%5.0f %10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %5.0f %8.1f %12.1f %12.1f\n",
                  static_cast<double>(now - started_ns) / 1e9, published, published - arrived,
                  arrived - arrived_last, (sample.cpu_seconds - last.cpu_seconds) * 100,
                  sample.rss_mb, static_cast<double>(lateness_second.quantile(0.5)) / 1e6,
                  static_cast<double>(lateness_second.quantile(0.99)) / 1e6);
      std::fflush(stdout);
      lateness_second.clear();
      arrived_last = arrived;
      last = sample;
      next_report_ns += 1'000'000'000ULL;
    }
  }
  ProcessSample after = sample_process(server_pid);
  double seconds = static_cast<double>(monotonic_ns() - started_ns) / 1e9;
  std::printf("summary: %" PRIu64 " messages in %.1f s; %" PRIu64
              " early; lateness p50 %.1f ms, p99 %.1f ms, max %.1f ms; broker CPU %.1f s "
              "(%.2f us per message); RSS peak %.1f MB (%.0f bytes per message held above the "
              "%.1f MB start), end %.1f MB\n",
              arrived, seconds, early, static_cast<double>(lateness_total.quantile(0.5)) / 1e6,
              static_cast<double>(lateness_total.quantile(0.99)) / 1e6,
              static_cast<double>(lateness_total.max()) / 1e6,
              after.cpu_seconds - before.cpu_seconds,
              (after.cpu_seconds - before.cpu_seconds) * 1e6 / static_cast<double>(messages),
              rss_peak_mb, (rss_peak_mb - before.rss_mb) * 1e6 / static_cast<double>(messages),
              before.rss_mb, after.rss_mb);
  client.close();
  return early == 0 ? 0 : 2;
}
