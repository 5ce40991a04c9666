#include "server/server.h"

#include <spdlog/spdlog.h>

#include <asio.hpp>
#include <chrono>
#include <optional>
#include <random>

#include <malloc.h>
#include <sys/statvfs.h>
#ifdef HAMQ_JEMALLOC
#include <jemalloc/jemalloc.h>
#endif
#include <unistd.h>

#include "server/data_dir.h"
#include "server/node_identity.h"
#include "server/server_impl.h"

namespace hamq::server {
namespace {

constexpr size_t read_chunk_bytes = 64 * 1024;
// How long a finished connection waits for the client to close its end (see Session::linger).
constexpr auto linger_timeout = std::chrono::seconds(3);
constexpr size_t linger_read_bytes = 16 * 1024;

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

uint64_t unix_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

bool is_loopback(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).is_loopback();
  }
  return address.is_loopback();
}

}  // namespace

// One client socket driving one broker::Connection. Owned by the completion handlers in flight
// (shared_ptr); registered in the server's SessionSet while alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(asio::ip::tcp::socket socket, const broker::ConnectionConfig& config,
          broker::Broker& broker, SessionSet& sessions)
      : socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        peer_(remote_description()),
        connection_(config, broker, is_loopback_peer(), now_ms()),
        broker_(broker),
        sessions_(sessions) {
    sessions_.insert(this);
  }
  ~Session() {
    connection_.set_output_listener(nullptr);
    connection_.release();
    sessions_.erase(this);
  }

  void start() {
    spdlog::debug("accepted connection from {}", peer_);
    // Output can grow while another connection is being served (a delivery to a consumer
    // here); flush it from the loop once that work is done.
    std::weak_ptr<Session> weak = shared_from_this();
    connection_.set_output_listener([this, weak] {
      if (flush_posted_ || closed_) return;
      flush_posted_ = true;
      asio::post(socket_.get_executor(), [weak] {
        if (auto self = weak.lock()) {
          self->flush_posted_ = false;
          self->broker_.set_clock(now_ms(), unix_ms());
          self->connection_.run_deferred(now_ms());
          self->flush();
          self->resume_reading();
        }
      });
    });
    read();
    arm_timer();
  }

  void shut_down() {
    if (closed_ || lingering_) return;
    connection_.shut_down(now_ms());
    flush();
    arm_timer();
  }

 private:
  std::string remote_description() {
    asio::error_code ec;
    auto endpoint = socket_.remote_endpoint(ec);
    if (ec) return "unknown peer";
    return endpoint.address().to_string() + ":" + std::to_string(endpoint.port());
  }

  bool is_loopback_peer() {
    asio::error_code ec;
    auto endpoint = socket_.remote_endpoint(ec);
    return !ec && is_loopback(endpoint.address());
  }

  void read() {
    read_pending_ = true;
    auto space = connection_.prepare_input(read_chunk_bytes);
    socket_.async_read_some(asio::buffer(space.data(), space.size()),
                            [self = shared_from_this()](asio::error_code ec, size_t bytes) {
                              self->on_read(ec, bytes);
                            });
  }

  void on_read(asio::error_code ec, size_t bytes) {
    read_pending_ = false;
    if (lingering_) {
      if (ec) {
        close_socket();  // the client closed its end (or the socket failed): done
      } else {
        drain();
      }
      return;
    }
    if (ec) {
      if (!connection_.finished()) {
        const std::string& reason = connection_.end_reason();
        spdlog::info("connection from {} closed by the peer ({}){}{}", peer_, ec.message(),
                     reason.empty() ? "" : " after: ", reason);
      }
      close_socket();
      return;
    }
    broker_.set_clock(now_ms(), unix_ms());
    connection_.commit_input(bytes, now_ms());
    flush();
    if (!connection_.finished()) {
      if (connection_.reading_paused()) {
        // Blocked by the memory alarm; the output listener resumes. No handler is pending
        // now, so the session keeps itself alive meanwhile.
        read_paused_ = true;
        keep_alive_ = shared_from_this();
      } else {
        read();
      }
      arm_timer();
    }
  }

  void resume_reading() {
    if (!read_paused_ || closed_ || lingering_ || connection_.reading_paused()) return;
    read_paused_ = false;
    auto self = std::move(keep_alive_);
    read();
  }

  void flush() {
    if (writing_ || closed_ || lingering_) return;
    auto& output = connection_.output();
    if (output.empty()) {
      if (connection_.finished()) finish();
      return;
    }
    write_buffer_.clear();
    write_buffer_.swap(output);
    connection_.set_bytes_in_flight(write_buffer_.size());
    writing_ = true;
    asio::async_write(socket_, asio::buffer(write_buffer_),
                      [self = shared_from_this()](asio::error_code ec, size_t) {
                        self->writing_ = false;
                        self->connection_.set_bytes_in_flight(0);
                        // A buffer grown by a large message is given back, not kept for the
                        // life of the connection (output and this buffer trade places).
                        if (self->write_buffer_.capacity() > broker::output_backlog_high_bytes) {
                          std::vector<uint8_t>().swap(self->write_buffer_);
                        }
                        if (ec) {
                          self->close_socket();
                          return;
                        }
                        self->flush();
                      });
  }

  void arm_timer() {
    if (closed_ || lingering_) return;
    uint64_t at_ms = connection_.next_timer_ms();
    if (at_ms == UINT64_MAX) {
      timer_.cancel();
      return;
    }
    uint64_t now = now_ms();
    timer_.expires_after(std::chrono::milliseconds(at_ms > now ? at_ms - now : 0));
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec || self->closed_ || self->lingering_) return;
      self->broker_.set_clock(now_ms(), unix_ms());
      self->connection_.on_timer(now_ms());
      self->flush();
      self->arm_timer();
    });
  }

  void finish() {
    const std::string& reason = connection_.end_reason();
    if (reason.empty()) {
      spdlog::debug("connection from {} closed", peer_);
    } else {
      spdlog::info("connection from {} closed: {}", peer_, reason);
    }
    linger();
  }

  // After the last frame the client closes first, as RabbitMQ lets it. Closing the socket with
  // the client's frames unread would reset the connection under its last writes (clients such as
  // amqplib go on publishing after connection.close until they read close-ok), and a client that
  // takes the reset for an error never finishes its close. So the connection's resources go now,
  // what still arrives is read and dropped, and the socket closes at the client's end of stream
  // or after linger_timeout. Not even a half-close goes out meanwhile: a proxy between the two
  // (one that closes both ways when one side ends) would reset the client all the same.
  void linger() {
    if (closed_ || lingering_) return;
    lingering_ = true;
    connection_.release();
    timer_.cancel();
    timer_.expires_after(linger_timeout);
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (!ec) self->close_socket();
    });
    linger_buffer_.resize(linger_read_bytes);
    if (!read_pending_) drain();
  }

  void drain() {
    read_pending_ = true;
    socket_.async_read_some(asio::buffer(linger_buffer_),
                            [self = shared_from_this()](asio::error_code ec, size_t bytes) {
                              self->on_read(ec, bytes);
                            });
  }

  void close_socket() {
    if (closed_) return;
    closed_ = true;
    connection_.release();
    keep_alive_.reset();
    asio::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    timer_.cancel();
  }

  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;
  std::string peer_;
  broker::Connection connection_;
  broker::Broker& broker_;
  SessionSet& sessions_;
  std::vector<uint8_t> write_buffer_;
  bool writing_ = false;
  bool closed_ = false;
  bool flush_posted_ = false;
  bool read_paused_ = false;
  bool read_pending_ = false;
  bool lingering_ = false;  // finished: waiting for the client to close (linger)
  std::vector<uint8_t> linger_buffer_;
  std::shared_ptr<Session> keep_alive_;  // set while reading is paused
};

// How far the bytes held must fall before freed memory is given back to the system.
constexpr uint64_t memory_trim_step_bytes = 32 << 20;

uint64_t physical_memory_bytes() {
  long pages = ::sysconf(_SC_PHYS_PAGES);
  long page_size = ::sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * page_size : 0;
}

uint64_t LinkRelay::link_epoch(uint64_t node) const {
  auto name = node_names_.find(node);
  if (name == node_names_.end() || transport_ == nullptr || !transport_->connected(name->second)) {
    return 0;
  }
  auto epoch = epochs_.find(name->second);
  return epoch == epochs_.end() ? 1 : epoch->second;
}

void LinkRelay::forward(uint64_t node, uint64_t group, std::string data) {
  auto name = node_names_.find(node);
  if (name == node_names_.end() || transport_ == nullptr) return;
  transport_->send_frame(name->second, cluster::RelayForward{group, std::move(data)});
}

void LinkRelay::answer(uint64_t node, uint64_t group, std::string data) {
  auto name = node_names_.find(node);
  if (name == node_names_.end() || transport_ == nullptr) return;
  transport_->send_frame(name->second, cluster::RelayAnswer{group, std::move(data)});
}

Server::Impl::Impl(ServerConfig c)
    : config(std::move(c)),
      broker({"/"}, std::random_device{}()),
      acceptor(io),
      signals(io),
      grace(io),
      broker_timer(io),
      trim_timer(io),
      tick_timer(io),
      disk_timer(io),
      startup_timer(io) {
  uint64_t watermark = config.memory_high_watermark_bytes;
  if (watermark == 0) watermark = physical_memory_bytes() / 10 * 4;
  broker.set_memory_high_watermark(watermark);
  broker.set_queue_snapshot_log_bytes(config.queue_snapshot_log_bytes);
  broker.set_queue_snapshot_carried_bytes(config.queue_snapshot_carried_bytes);
  broker.set_timer_listener([this] { arm_broker_timer(); });
}

void Server::Impl::trim_memory_now_and_then() {
  trim_timer.expires_after(std::chrono::seconds(2));
  trim_timer.async_wait([this](asio::error_code ec) {
    if (ec) return;
    uint64_t used = broker.memory_used();
    memory_high_since_trim_bytes = std::max(memory_high_since_trim_bytes, used);
    if (memory_high_since_trim_bytes > used + memory_trim_step_bytes) {
#ifdef HAMQ_JEMALLOC
      // Every arena's unused pages go back now rather than after jemalloc's decay.
      std::string purge = "arena." + std::to_string(MALLCTL_ARENAS_ALL) + ".purge";
      mallctl(purge.c_str(), nullptr, nullptr, nullptr, 0);
#else
      ::malloc_trim(0);
#endif
      memory_high_since_trim_bytes = used;
    }
    trim_memory_now_and_then();
  });
}

void Server::Impl::arm_broker_timer() {
  uint64_t at_ms = broker.next_timer_ms();
  if (at_ms == broker_timer_at_ms) return;
  broker_timer_at_ms = at_ms;
  if (at_ms == UINT64_MAX) {
    broker_timer.cancel();
    return;
  }
  uint64_t now = now_ms();  // (the broker's timers are on the monotonic clock)
  broker_timer.expires_after(std::chrono::milliseconds(at_ms > now ? at_ms - now : 0));
  broker_timer.async_wait([this](asio::error_code ec) {
    if (ec) return;  // re-armed or cancelled
    broker_timer_at_ms = UINT64_MAX;
    broker.set_clock(now_ms(), unix_ms());
    broker.on_timer();
    arm_broker_timer();
  });
}

void Server::Impl::check_disk_soon() {
  uint64_t now = now_ms();
  if (now < disk_checked_at_ms + disk_check_interval_ms) return;
  check_disk();
}

void Server::Impl::check_disk() {
  disk_checked_at_ms = now_ms();
  struct statvfs stats {};
  uint64_t free_bytes = UINT64_MAX;
  if (::statvfs(config.data_dir.c_str(), &stats) == 0) {
    free_bytes = static_cast<uint64_t>(stats.f_bavail) * stats.f_frsize;
  }
  bool low = free_bytes < config.disk_free_limit_bytes || (disk_refused_write && free_bytes == 0);
  if (!low) disk_refused_write = false;
  low = low || disk_refused_write;
  if (low != broker.disk_alarm()) {
    if (low) {
      spdlog::warn(
          "disk alarm: {} bytes free on the data directory's disk (limit {}): "
          "publishers are blocked",
          free_bytes, config.disk_free_limit_bytes);
    } else {
      spdlog::info("disk alarm cleared: {} bytes free", free_bytes);
    }
    broker.set_disk_alarm(low);
  }
}

void Server::Impl::check_disk_every_second() {
  disk_timer.expires_after(std::chrono::seconds(1));
  disk_timer.async_wait([this](asio::error_code ec) {
    if (ec) return;
    check_disk();
    check_disk_every_second();
  });
}

void Server::Impl::tick() {
  tick_timer.expires_after(raft_tick);
  tick_timer.async_wait([this](asio::error_code ec) {
    if (ec) return;
    broker.set_clock(now_ms(), unix_ms());  // (commands given up are timed by it)
    reconcile_metadata_members();
    repair_queue_members();
    log->tick();
    log->process();
    tick();
  });
}

void Server::Impl::begin_accepting() {
  asio::error_code ec;
  spdlog::info("hamq-server {} listening on [{}]:{}, data in {}", config.connection.product_version,
               config.bind_address, acceptor.local_endpoint(ec).port(), config.data_dir.string());
  spdlog::default_logger()->flush();
  serving = true;
  accept();
}

void Server::Impl::advance_startup() {
  if (!metadata->failure().empty()) {
    spdlog::critical("cannot replay the metadata group: {}", metadata->failure());
    io.stop();
    return;
  }
  if (startup_stage == 0) {
    if (!log->member_caught_up(metadata_group)) return poll_startup();
    broker.end_definition_replay();
    broker.set_definition_store(metadata.get());
    broker.begin_replay();
    log->open_queue_groups_async(broker.queue_groups());
    startup_stage = 1;
  }
  if (startup_stage == 1) {
    if (!log->queue_groups_caught_up()) return poll_startup();
    broker.found_missing_groups();
    broker.record_incarnation();
    broker.end_replay();
    broker.detach_previous_holders();
    transient_dropped = broker.drop_transient_definitions();
    broker.declare_parking_queues();
    startup_stage = 2;
  }
  if (broker.pending_definition_count() != 0 || broker.pending_command_count() != 0) {
    return poll_startup();
  }
  log_restored();
  begin_accepting();
}

void Server::Impl::poll_startup() {
  startup_timer.expires_after(std::chrono::milliseconds(10));
  startup_timer.async_wait([this](asio::error_code ec) {
    if (!ec) advance_startup();
  });
}

void Server::Impl::log_restored() {
  auto replay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - replay_started)
                       .count();
  const broker::Definitions kept = broker.current_definitions();
  spdlog::info(
      "restored {} exchange(s), {} queue(s), {} binding(s) ({} transient dropped); replayed "
      "in {} ms",
      kept.exchanges().size(), kept.queues().size(), kept.bindings().size(), transient_dropped,
      replay_ms);
}

void Server::Impl::accept() {
  acceptor.async_accept([this](asio::error_code ec, asio::ip::tcp::socket socket) {
    if (ec) {
      if (ec != asio::error::operation_aborted) {
        spdlog::warn("accept failed: {}", ec.message());
        accept();
      }
      return;
    }
    asio::error_code ignored;
    socket.set_option(asio::ip::tcp::no_delay(true), ignored);
    std::make_shared<Session>(std::move(socket), config.connection, broker, sessions)->start();
    accept();
  });
}

void Server::Impl::shut_down(int signal_number) {
  if (signal_number == 0) {
    spdlog::info("closing {} connection(s) to start again as a cluster member", sessions.size());
  } else {
    spdlog::info("signal {} received: closing {} connection(s) and stopping", signal_number,
                 sessions.size());
  }
  asio::error_code ignored;
  acceptor.close(ignored);
  // Copy: a session may finish, and leave the set, while it is told to shut down.
  std::vector<Session*> open(sessions.begin(), sessions.end());
  for (Session* session : open) session->shut_down();
  grace.expires_after(std::chrono::milliseconds(config.shutdown_grace_ms));
  grace.async_wait([this](asio::error_code) { io.stop(); });
  wait_for_sessions();
}

void Server::Impl::wait_for_sessions() {
  if (sessions.empty()) {
    io.stop();
    return;
  }
  auto poll = std::make_shared<asio::steady_timer>(io, std::chrono::milliseconds(20));
  poll->async_wait([this, poll](asio::error_code) { wait_for_sessions(); });
}

Server::Server(ServerConfig config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Server::~Server() = default;

Result<void, std::string> Server::start() {
  ServerConfig& config = impl_->config;
  auto lock = DataDirLock::acquire(config.data_dir);
  if (!lock.ok()) return unexpected(lock.error());
  impl_->lock.emplace(std::move(lock.value()));
  const std::string name = config.node_name.empty() ? default_node_name() : config.node_name;
  if (auto completed = complete_pending_join(config.data_dir); !completed.ok()) {
    return unexpected(completed.error());
  }
  auto known = load_cluster_nodes(config.data_dir / cluster_nodes_file);
  if (!known.ok()) return unexpected(known.error());
  impl_->known_nodes = std::move(known.value());
  const auto& seeds = config.cluster_seeds;
  bool seeded = std::any_of(seeds.begin(), seeds.end(),
                            [&name](const PeerAddress& seed) { return seed.name != name; });
  // A node that joined a running cluster has no seeds: it knows its peers from its last run.
  bool joined = std::any_of(impl_->known_nodes.begin(), impl_->known_nodes.end(),
                            [&name](const KnownNode& node) { return node.address.name != name; });
  impl_->clustered = seeded || joined;
  Founding founding;
  if (seeded) {
    auto position = seed_node_id(seeds, name);
    if (!position) {
      return unexpected("node '" + name +
                        "' is not among --cluster-seeds: a seed founds the cluster with the "
                        "others (give every node the same list)");
    }
    founding = Founding{seeds_cluster_id(seeds), *position};
  }
  bool log_is_new = NodeLog::log_is_new(config.data_dir);
  auto identity =
      load_or_create_identity(config.data_dir, name, log_is_new, unix_ms() * 1000, founding);
  if (!identity.ok()) return unexpected(identity.error());
  impl_->identity = identity.value();
  spdlog::info("node {} (id {}, incarnation {}) of cluster {}", identity->node_name,
               identity->node_id, identity->incarnation, identity->cluster_id);
  auto log = NodeLog::open(config.data_dir, raft::NodeId{identity->node_id}, identity->incarnation);
  if (!log.ok()) return unexpected(log.error());
  impl_->log = std::move(log.value());
  NodeLog& node_log = *impl_->log;
  const storage::RecoveryReport& report = node_log.recovery();
  spdlog::info("write-ahead log: {} segment(s), {} record(s) read, {} torn byte(s) cut",
               report.segments, report.records, report.torn_bytes_cut);
  broker::Broker& broker = impl_->broker;
  broker.set_node_id(impl_->identity.node_id);
  broker.set_log_identity(log_is_new, identity->incarnation);
  auto life = begin_life(config.data_dir);
  if (!life.ok()) return unexpected(life.error());
  broker.set_life(*life);
  broker.set_clock(now_ms(), unix_ms());
  broker.set_queue_store(&node_log);
  node_log.set_broker(&broker);
  impl_->replay_started = std::chrono::steady_clock::now();
  if (impl_->clustered) {
    auto started = impl_->start_cluster();
    if (!started.ok()) return started;
  } else {
    // The definitions: the metadata group replays into the broker's virtual hosts. Then each
    // durable queue's log replays onto its queue, and what the previous life's consumers held
    // is theirs no more (ready again, redelivered).
    broker.begin_definition_replay();
    auto metadata = MetadataStore::open(node_log, broker,
                                        broker::ClusterNode{.id = impl_->identity.node_id,
                                                            .name = impl_->identity.node_name,
                                                            .host = config.bind_address,
                                                            .port = config.cluster_port});
    if (!metadata.ok()) return unexpected(metadata.error());
    broker.end_definition_replay();
    impl_->metadata = std::move(metadata.value());
    broker.set_definition_store(impl_->metadata.get());
    broker.begin_replay();
    if (!node_log.open_queue_groups(broker.queue_groups())) {
      return unexpected(std::string("cannot replay the queues' logs: the write-ahead log failed"));
    }
    broker.found_missing_groups();
    broker.record_incarnation();
    // Messages still leaving a queue for another are offered again (at least once).
    broker.end_replay();
    broker.detach_previous_holders();
    // What did not outlive the previous life (transient and exclusive queues, transient
    // exchanges) goes.
    impl_->transient_dropped = broker.drop_transient_definitions();
    broker.declare_parking_queues();
    if (!node_log.settle([&broker] {
          return broker.pending_command_count() == 0 && broker.pending_definition_count() == 0;
        })) {
      return unexpected(std::string("cannot settle the queues' logs: the write-ahead log failed"));
    }
    impl_->log_restored();
    impl_->start_writer();
    // Alone, it still listens for peers: a blank node can join it (hamqctl join_cluster).
    if (auto listening = impl_->start_transport(); listening.ok()) {
      spdlog::info("peers on port {}", impl_->transport->port());
    } else {
      spdlog::warn("{}: no node can join this one", listening.error());
    }
  }
  auto listened = impl_->listen();
  if (!listened.ok()) return listened;
  impl_->node_names[impl_->identity.node_id] = impl_->identity.node_name;
  impl_->management = std::make_unique<ManagementListener>(
      impl_->io,
      [this](const HttpRequest& request, bool from_loopback, ManagementListener::Respond respond) {
        impl_->handle_management(request, from_loopback, std::move(respond));
      });
  auto managed = impl_->management->start(config.bind_address, config.management_port);
  if (!managed.ok()) return managed;
  spdlog::info("management listening on [{}]:{}", config.bind_address, impl_->management->port());
  // Caught from here on, before the caller says it listens: a SIGTERM that comes at once still
  // shuts down cleanly (handled when run() starts the loop).
  impl_->signals.add(SIGTERM);
  impl_->signals.add(SIGINT);
  impl_->signals.async_wait([this](asio::error_code wait_error, int signal_number) {
    if (!wait_error) impl_->shut_down(signal_number);
  });
  return Ok{};
}

void Server::Impl::start_writer() {
  log->start_writer(
      [this](std::function<void()> work) {
        asio::post(io, [this, work = std::move(work)] {
          broker.set_clock(now_ms(), unix_ms());
          work();
          check_disk_soon();
        });
      },
      [this] {
        if (!disk_refused_write) spdlog::warn("the disk is full: writes wait for space");
        disk_refused_write = true;
        check_disk();
      });
  check_disk();
}

Result<void, std::string> Server::Impl::start_transport() {
  std::filesystem::path secret_path = config.cluster_secret_file.empty()
                                          ? config.data_dir / "cluster-secret"
                                          : config.cluster_secret_file;
  auto secret = load_or_create_cluster_secret(secret_path);
  if (!secret.ok()) return unexpected(secret.error());
  PeerTransportConfig link{.cluster_id = identity.cluster_id,
                           .node_name = identity.node_name,
                           .node_id = identity.node_id,
                           .incarnation = identity.incarnation,
                           .bind_address = config.bind_address,
                           .port = config.cluster_port,
                           .secret = *secret};
  transport = std::make_unique<PeerTransport>(
      io, link,
      PeerTransportCallbacks{
          .on_peer_up =
              [this](const cluster::Hello& hello) {
                relay.peer_up(hello.node_name);
                log->on_peer_up(hello.node_name);
              },
          .on_peer_down = [this](const std::string& peer) { log->on_peer_down(peer); },
          .on_batch = [this](const std::string&, raft::NodeBatch batch) { log->receive(batch); },
          .on_propose =
              [this](const std::string& peer, cluster::Propose propose) {
                broker.set_clock(now_ms(), unix_ms());  // the time the leader stamps
                log->on_propose(peer, propose);
              },
          .on_proposed = [this](const std::string&,
                                const cluster::Proposed& proposed) { log->on_proposed(proposed); },
          .on_relay_forward =
              [this](const std::string& peer, cluster::RelayForward forward) {
                broker.set_clock(now_ms(), unix_ms());  // the time a command is stamped with
                broker.relay_forwarded(node_id_of(peer), forward.group, forward.data);
              },
          .on_relay_answer =
              [this](const std::string& peer, cluster::RelayAnswer answer) {
                broker.set_clock(now_ms(), unix_ms());
                broker.relay_answered(node_id_of(peer), answer.group, answer.data);
              },
          .on_join =
              [this](const cluster::Hello& joiner, const cluster::Join& join,
                     const std::string& reached_at, PeerTransportCallbacks::JoinAnswerFn answer) {
                on_join(joiner, join, reached_at, std::move(answer));
              }});
  auto listening = transport->start();
  if (!listening.ok()) {
    transport.reset();
    return unexpected(listening.error());
  }
  node_names[identity.node_id] = identity.node_name;
  log->attach_transport(transport.get(), node_names);
  broker.set_queue_relay(&relay);
  broker.set_nodes_listener([this] { nodes_changed(); });
  return Ok{};
}

Result<void, std::string> Server::Impl::start_cluster() {
  if (auto started = start_transport(); !started.ok()) return started;
  // The peers: the seeds, and the members the node knew when it last ran (a node that joined
  // has only those); the metadata group's nodes replace them as it replays (nodes_changed).
  std::vector<KnownNode> peers = known_nodes;
  std::vector<broker::ClusterNode> founders;
  bool seed = seed_node_id(config.cluster_seeds, identity.node_name).has_value();
  for (size_t i = 0; seed && i < config.cluster_seeds.size(); ++i) {
    const PeerAddress& address = config.cluster_seeds[i];
    peers.push_back(KnownNode{i + 1, address});
    founders.push_back(broker::ClusterNode{
        .id = i + 1, .name = address.name, .host = address.host, .port = address.port});
  }
  for (const KnownNode& peer : peers) {
    node_names[peer.id] = peer.address.name;
    if (peer.address.name != identity.node_name) transport->add_peer(peer.address);
  }
  node_names[identity.node_id] = identity.node_name;
  log->set_peer_names(node_names);
  broker.set_clustered(true);
  spdlog::info("cluster of {} known node(s); peers on port {}", node_names.size(),
               transport->port());
  broker.begin_definition_replay();
  // A seed founds the metadata group with the other seeds if it has none; a node that joined
  // starts an empty member, which the leader fills.
  auto started = MetadataStore::start(*log, broker, founders, node_names.size() > 1);
  if (!started.ok()) return unexpected(started.error());
  metadata = std::move(started.value());
  start_writer();
  return Ok{};
}

Result<void, std::string> Server::Impl::listen() {
  asio::error_code ec;
  auto address = asio::ip::make_address(config.bind_address, ec);
  if (ec) return unexpected("bad bind address '" + config.bind_address + "'");
  asio::ip::tcp::endpoint endpoint(address, config.port);
  if (acceptor.open(endpoint.protocol(), ec)) {
    return unexpected("cannot open a socket: " + ec.message());
  }
  if (address.is_v6()) acceptor.set_option(asio::ip::v6_only(false), ec);
  acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (acceptor.bind(endpoint, ec)) {
    return unexpected("cannot listen on " + config.bind_address + " port " +
                      std::to_string(config.port) + ": " + ec.message());
  }
  if (acceptor.listen(asio::socket_base::max_listen_connections, ec)) {
    return unexpected("cannot listen: " + ec.message());
  }
  return Ok{};
}

uint16_t Server::port() const {
  asio::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

bool Server::run() {
  if (impl_->clustered) {
    impl_->advance_startup();
  } else {
    impl_->begin_accepting();
  }
  impl_->trim_memory_now_and_then();
  impl_->tick();
  impl_->check_disk_every_second();
  impl_->io.run();
  impl_->log->stop_posting();
  return impl_->rejoin;
}

}  // namespace hamq::server
