// hamq-server: the broker's command line. With no flags it serves AMQP 0-9-1 on port 5672 with
// its data in ./hamq-data.
#include <spdlog/spdlog.h>

#include <malloc.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "amqp/frame.h"
#include "server/node_identity.h"
#include "server/server.h"

int main(int argc, char** argv) {
  // Buffers of a megabyte or more (queue snapshots, log batches) come from mmap and go back to
  // the system when freed. glibc's default raises that threshold to 32 MiB after the first such
  // buffer is freed, after which a large snapshot's memory stayed with the process.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  hamq::server::ServerConfig config;
  std::string data_dir = config.data_dir.string();
  std::string log_level = "info";

  CLI::App app{"hamq-server: a replicated AMQP 0-9-1 message broker", "hamq-server"};
  app.add_option("--port", config.port, "AMQP port to listen on (0: any free port)")
      ->capture_default_str();
  app.add_option("--bind", config.bind_address, "Address to listen on")->capture_default_str();
  app.add_option("--data-dir", data_dir, "Directory for the broker's data")->capture_default_str();
  config.node_name = hamq::server::default_node_name();
  app.add_option("--node-name", config.node_name,
                 "This node's name in its cluster; a data directory keeps the name it was made "
                 "with")
      ->capture_default_str()
      ->check([](const std::string& name) {
        return hamq::server::valid_node_name(name)
                   ? std::string()
                   : std::string("1 to 255 characters, no spaces or commas");
      });
  app.add_option("--cluster-port", config.cluster_port,
                 "Port the node listens on for its peers (on the --bind address)")
      ->capture_default_str();
  app.add_option("--management-port", config.management_port,
                 "Port of the management listener, which hamqctl talks to (0: any free port)")
      ->capture_default_str();
  std::string seeds;
  app.add_option("--cluster-seeds", seeds,
                 "The nodes that found the cluster, NAME@HOST:PORT,... in the same order on "
                 "each (none, or only this node: a cluster of one)");
  std::string secret_file;
  app.add_option("--cluster-secret-file", secret_file,
                 "The secret peers share, made there when missing; copy it to every node "
                 "(default: DATA_DIR/cluster-secret)");
  app.add_option("--heartbeat", config.connection.heartbeat_s,
                 "Heartbeat interval proposed to clients, in seconds (0: off)")
      ->capture_default_str();
  app.add_option("--frame-max", config.connection.frame_max_bytes,
                 "Largest frame accepted, in bytes")
      ->capture_default_str()
      ->check(CLI::Range(8192u, 1u << 30));
  app.add_option("--channel-max", config.connection.channel_max, "Channels per connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 65535));
  app.add_option("--connection-max", config.connection.connection_max,
                 "Open connections accepted (0: no limit)")
      ->capture_default_str();
  app.add_option("--max-message-size-bytes", config.connection.message_size_bytes_max,
                 "Largest message body a publisher may send (RabbitMQ's max_message_size)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, hamq::amqp::body_size_bytes_max));
  app.add_option("--memory-high-watermark-bytes", config.memory_high_watermark_bytes,
                 "Message bytes held in queues above which publishers are blocked (0: 40% of "
                 "memory)")
      ->capture_default_str();
  app.add_option("--disk-free-limit-bytes", config.disk_free_limit_bytes,
                 "Free disk space below which publishers are blocked")
      ->capture_default_str();
  app.add_option("--queue-snapshot-log-bytes", config.queue_snapshot_log_bytes,
                 "Log bytes a durable queue applies between snapshots of its state")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{1} << 40));
  app.add_option("--member-repair-after-seconds", config.member_repair_after_s,
                 "A node unreachable this long loses its members of replicated queues to other "
                 "nodes (0: only a forgotten node does)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 32));
  app.add_option("--queue-snapshot-carried-bytes", config.queue_snapshot_carried_bytes,
                 "Bytes of its oldest messages a durable queue's snapshot carries with their "
                 "bodies (the others refer to the log)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{1} << 32));
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}));
  CLI11_PARSE(app, argc, argv);

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e [%l] %v");
  config.data_dir = data_dir;
  config.cluster_secret_file = secret_file;
  auto parsed_seeds = hamq::server::parse_cluster_seeds(seeds);
  if (!parsed_seeds.ok()) {
    spdlog::critical("--cluster-seeds: {}", parsed_seeds.error());
    return 1;
  }
  config.cluster_seeds = std::move(parsed_seeds.value());

  for (;;) {
    hamq::server::Server server(config);
    auto started = server.start();
    if (!started.ok()) {
      spdlog::critical("{}", started.error());
      return 1;
    }
    if (!server.run()) break;
    // It joined a cluster: it starts again, the same process, as the cluster's member.
  }
  spdlog::info("hamq-server stopped");
  return 0;
}
