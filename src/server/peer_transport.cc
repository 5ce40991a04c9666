#include "server/peer_transport.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <deque>
#include <optional>
#include <random>

namespace hamq::server {
namespace {

constexpr size_t read_chunk_bytes = 64 << 10;
constexpr std::string_view proof_label = "hamq-link-1";

std::string random_nonce() {
  std::random_device device;
  std::string nonce(cluster::link_nonce_bytes, '\0');
  for (char& byte : nonce) byte = static_cast<char>(device() & 0xFF);
  return nonce;
}

// An IPv4 peer of a socket bound to :: shows as ::ffff:a.b.c.d: recorded as a.b.c.d.
std::string plain_address(const asio::ip::address& address) {
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    return asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6()).to_string();
  }
  return address.to_string();
}

}  // namespace

std::string link_proof(const std::string& secret, const std::string& nonce,
                       const std::string& prover, const std::string& checker) {
  // Names are short strings (at most 255 bytes), so a length byte before each keeps the message
  // unambiguous.
  std::string message(proof_label);
  message += nonce;
  message.push_back(static_cast<char>(prover.size()));
  message += prover;
  message.push_back(static_cast<char>(checker.size()));
  message += checker;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length);
  return std::string(reinterpret_cast<const char*>(digest), length);
}

// One connection to a peer, from its hello to its close. Owned by its handlers in flight and by
// the transport (shared_ptr); `owner_` is cleared when the transport stops.
class PeerTransport::Link : public std::enable_shared_from_this<Link> {
 public:
  // `expected_peer`: the name of the dialled peer; empty for an accepted connection.
  // `join`: the link of a blank node asking to join (request_join): it sends one Join once the
  // handshake is done, and ends with the answer.
  Link(PeerTransport& owner, asio::ip::tcp::socket socket, std::string expected_peer,
       std::optional<cluster::Join> join = std::nullopt, JoinDone join_done = {})
      : owner_(&owner),
        socket_(std::move(socket)),
        timer_(socket_.get_executor()),
        expected_peer_(std::move(expected_peer)),
        nonce_(random_nonce()),
        join_(std::move(join)),
        join_done_(std::move(join_done)) {}

  void start() {
    const PeerTransportConfig& config = owner_->config_;
    std::vector<uint8_t> hello;
    cluster::encode_frame(hello, cluster::Hello{.cluster_id = config.cluster_id,
                                                .node_name = config.node_name,
                                                .node_id = config.node_id,
                                                .incarnation = config.incarnation,
                                                .nonce = nonce_});
    queue(std::move(hello));
    timer_.expires_after(std::chrono::milliseconds(config.handshake_timeout_ms));
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      // A join link must be answered in time as well (a joiner must ask in time).
      if (ec) return;
      if (!self->established_) {
        self->close("no handshake in time", true);
      } else if (self->join_ || (self->joiner_ && !self->asked_)) {
        self->close("no join in time", self->joiner_);
      }
    });
    read();
  }

  // Queues a frame; false when the queue is past its bound (the frame is dropped).
  bool queue(std::vector<uint8_t> frame) {
    if (closed_) return false;
    if (owner_ != nullptr && queued_bytes_ + frame.size() > owner_->config_.send_queue_bytes_max &&
        queued_bytes_ > 0) {
      return false;
    }
    queued_bytes_ += frame.size();
    sent_since_keepalive_ = true;
    pending_.push_back(std::move(frame));
    write();
    return true;
  }

  void close(const std::string& reason, bool refused) {
    if (closed_) return;
    closed_ = true;
    if (join_done_) {
      auto done = std::move(join_done_);
      join_done_ = {};
      done(unexpected("no answer from the cluster: " + (reason.empty() ? "closed" : reason)));
    }
    asio::error_code ignored;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    timer_.cancel();
    if (owner_ != nullptr) owner_->link_closed(shared_from_this(), reason, refused);
  }

  void detach() {
    owner_ = nullptr;
    close("", false);
  }

  const std::string& peer_name() const { return peer_name_; }
  const std::string& expected_peer() const { return expected_peer_; }
  bool established() const { return established_; }

 private:
  void read() {
    socket_.async_read_some(
        asio::buffer(read_buffer_.data(), read_buffer_.size()),
        [self = shared_from_this()](asio::error_code ec, size_t bytes) {
          if (self->closed_) return;
          if (ec) {
            self->close(ec == asio::error::eof ? "closed by the peer" : ec.message(), false);
            return;
          }
          self->last_heard_ = std::chrono::steady_clock::now();
          self->reader_.append({self->read_buffer_.data(), bytes});
          for (;;) {
            auto next = self->reader_.next();
            if (!next.ok()) {
              self->close("bad frame: " + next.error(), true);
              return;
            }
            if (!next.value()) break;
            self->handle(std::move(*next.value()));
            if (self->closed_) return;
          }
          self->read();
        });
  }

  void handle(cluster::LinkFrame frame) {
    if (owner_ == nullptr) return;
    if (auto* hello = std::get_if<cluster::Hello>(&frame)) {
      handle_hello(std::move(*hello));
    } else if (auto* proof = std::get_if<cluster::HelloProof>(&frame)) {
      handle_proof(*proof);
    } else if (!established_) {
      close("Raft messages before the handshake", true);
    } else if (joiner_ || join_) {
      handle_join_frame(frame);
    } else if (std::holds_alternative<cluster::Join>(frame) ||
               std::holds_alternative<cluster::JoinAnswer>(frame)) {
      close("a join frame from a member", true);
    } else if (auto* propose = std::get_if<cluster::Propose>(&frame)) {
      if (owner_->callbacks_.on_propose) {
        owner_->callbacks_.on_propose(peer_name_, std::move(*propose));
      }
    } else if (auto* proposed = std::get_if<cluster::Proposed>(&frame)) {
      if (owner_->callbacks_.on_proposed) owner_->callbacks_.on_proposed(peer_name_, *proposed);
    } else if (auto* forward = std::get_if<cluster::RelayForward>(&frame)) {
      if (owner_->callbacks_.on_relay_forward) {
        owner_->callbacks_.on_relay_forward(peer_name_, std::move(*forward));
      }
    } else if (auto* answer = std::get_if<cluster::RelayAnswer>(&frame)) {
      if (owner_->callbacks_.on_relay_answer) {
        owner_->callbacks_.on_relay_answer(peer_name_, std::move(*answer));
      }
    } else if (owner_->callbacks_.on_batch) {
      owner_->callbacks_.on_batch(peer_name_, std::move(std::get<cluster::RaftBatch>(frame).batch));
    }
  }

  void handle_hello(cluster::Hello hello) {
    const PeerTransportConfig& config = owner_->config_;
    if (!peer_name_.empty()) return close("a second hello", true);
    if (!hello.cluster_id.empty() && !config.cluster_id.empty() &&
        hello.cluster_id != config.cluster_id) {
      return close(
          "node '" + hello.node_name + "' is of another cluster (" + hello.cluster_id + ")", true);
    }
    if (!expected_peer_.empty() && hello.node_name != expected_peer_) {
      return close("dialled '" + expected_peer_ + "' but '" + hello.node_name + "' answered", true);
    }
    if (expected_peer_.empty() && hello.cluster_id.empty() && !owner_->knows(hello.node_name) &&
        !config.cluster_id.empty()) {
      // A blank node that would join: it may prove itself and ask, nothing more.
      joiner_ = true;
    } else if (expected_peer_.empty() &&
               (!owner_->knows(hello.node_name) || !(hello.node_name < config.node_name))) {
      return close("'" + hello.node_name + "' is not a peer that dials this node", true);
    }
    peer_name_ = hello.node_name;
    peer_hello_ = std::move(hello);
    std::vector<uint8_t> proof;
    cluster::encode_frame(proof, cluster::HelloProof{link_proof(config.secret, peer_hello_.nonce,
                                                                config.node_name, peer_name_)});
    queue(std::move(proof));
  }

  void handle_proof(const cluster::HelloProof& proof) {
    if (peer_name_.empty() || established_) return close("a proof out of turn", true);
    const PeerTransportConfig& config = owner_->config_;
    std::string expected = link_proof(config.secret, nonce_, peer_name_, config.node_name);
    if (proof.proof.size() != expected.size() ||
        CRYPTO_memcmp(proof.proof.data(), expected.data(), expected.size()) != 0) {
      return close("'" + peer_name_ + "' does not know the cluster secret", true);
    }
    established_ = true;
    if (joiner_) return;  // the handshake timer stays: the join must come in time
    if (join_) {
      std::vector<uint8_t> frame;
      cluster::encode_frame(frame, *join_);
      queue(std::move(frame));
      return;
    }
    timer_.cancel();
    reader_.set_body_bytes_max(cluster::link_body_bytes_max);
    owner_->link_up(shared_from_this(), peer_hello_);
    keep_alive();
  }

  // An established link carries a frame at least every keepalive_ms (an empty batch when it has
  // nothing else to say), and one that hears nothing for idle_timeout_ms is closed: a peer that
  // hangs, or is cut off without its connection closing, is down all the same.
  void keep_alive() {
    if (closed_ || owner_ == nullptr) return;
    const PeerTransportConfig& config = owner_->config_;
    auto now = std::chrono::steady_clock::now();
    // A loop that stalled (this timer late) has not read what came meanwhile: no verdict now.
    if (now - last_keepalive_ > std::chrono::milliseconds(config.idle_timeout_ms / 2)) {
      last_heard_ = now;
    }
    last_keepalive_ = now;
    if (now - last_heard_ > std::chrono::milliseconds(config.idle_timeout_ms)) {
      close("nothing heard for " + std::to_string(config.idle_timeout_ms) + " ms", false);
      return;
    }
    if (!sent_since_keepalive_) {
      std::vector<uint8_t> frame;
      cluster::encode_frame(frame, cluster::RaftBatch{});
      queue(std::move(frame));
    }
    sent_since_keepalive_ = false;
    timer_.expires_after(std::chrono::milliseconds(config.keepalive_ms));
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (!ec) self->keep_alive();
    });
  }

  void handle_join_frame(cluster::LinkFrame& frame) {
    if (join_) {
      auto* answer = std::get_if<cluster::JoinAnswer>(&frame);
      if (answer == nullptr) return close("not an answer to the join", true);
      auto done = std::move(join_done_);
      join_done_ = {};
      if (done) done(std::move(*answer));
      return close("", false);
    }
    auto* join = std::get_if<cluster::Join>(&frame);
    if (join == nullptr || asked_) return close("a joining node sent more than its join", true);
    asked_ = true;
    timer_.cancel();
    asio::error_code ec;
    auto host = asio::ip::make_address(join->host, ec);
    if (!ec && host.is_unspecified()) {
      // It listens on every address (--bind 0.0.0.0 or ::): peers reach it where it came from.
      auto remote = socket_.remote_endpoint(ec);
      if (!ec) join->host = plain_address(remote.address());
    }
    if (!owner_->callbacks_.on_join) return close("joins are not served here", true);
    std::weak_ptr<Link> weak = shared_from_this();
    auto local = socket_.local_endpoint(ec);
    std::string reached_at = ec ? std::string() : plain_address(local.address());
    owner_->callbacks_.on_join(peer_hello_, *join, reached_at,
                               [weak](const cluster::JoinAnswer& answer) {
                                 auto self = weak.lock();
                                 if (!self || self->closed_) return;
                                 std::vector<uint8_t> bytes;
                                 cluster::encode_frame(bytes, answer);
                                 self->close_after_write_ = true;
                                 self->queue(std::move(bytes));
                               });
  }

  void write() {
    if (writing_ || pending_.empty() || closed_) return;
    write_buffer_.clear();
    for (auto& frame : pending_)
      write_buffer_.insert(write_buffer_.end(), frame.begin(), frame.end());
    pending_.clear();
    writing_ = true;
    asio::async_write(socket_, asio::buffer(write_buffer_),
                      [self = shared_from_this()](asio::error_code ec, size_t) {
                        self->writing_ = false;
                        self->queued_bytes_ -= self->write_buffer_.size();
                        if (self->write_buffer_.capacity() > (4u << 20)) {
                          std::vector<uint8_t>().swap(self->write_buffer_);
                        }
                        if (ec) {
                          self->close(ec.message(), false);
                          return;
                        }
                        if (self->close_after_write_ && self->pending_.empty()) {
                          self->close("", false);
                          return;
                        }
                        self->write();
                      });
  }

  PeerTransport* owner_;
  asio::ip::tcp::socket socket_;
  asio::steady_timer timer_;  // the handshake's deadline, then the keepalive's
  std::chrono::steady_clock::time_point last_heard_ = std::chrono::steady_clock::now();
  bool sent_since_keepalive_ = false;
  std::chrono::steady_clock::time_point last_keepalive_ = std::chrono::steady_clock::now();
  std::string expected_peer_;
  std::string nonce_;
  std::string peer_name_;
  cluster::Hello peer_hello_;
  bool established_ = false;
  bool closed_ = false;
  std::optional<cluster::Join> join_;  // a joining link's request
  JoinDone join_done_;
  bool joiner_ = false;  // an accepted link of a node asking to join
  bool asked_ = false;   // the joiner's one Join came
  bool close_after_write_ = false;
  cluster::LinkReader reader_;
  std::array<uint8_t, read_chunk_bytes> read_buffer_{};
  std::deque<std::vector<uint8_t>> pending_;
  uint64_t queued_bytes_ = 0;  // pending and being written
  std::vector<uint8_t> write_buffer_;
  bool writing_ = false;
};

PeerTransport::PeerTransport(asio::io_context& io, PeerTransportConfig config,
                             PeerTransportCallbacks callbacks)
    : io_(io), config_(std::move(config)), callbacks_(std::move(callbacks)), acceptor_(io) {}

PeerTransport::~PeerTransport() {
  stop();
  alive_.reset();
}

Result<void, std::string> PeerTransport::start() {
  asio::error_code ec;
  auto address = asio::ip::make_address(config_.bind_address, ec);
  if (ec) return unexpected("bad cluster address '" + config_.bind_address + "': " + ec.message());
  asio::ip::tcp::endpoint endpoint(address, config_.port);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return unexpected("cannot listen for peers on [" + config_.bind_address +
                      "]:" + std::to_string(config_.port) + ": " + ec.message());
  }
  port_ = acceptor_.local_endpoint().port();
  accept();
  return Ok{};
}

void PeerTransport::accept() {
  acceptor_.async_accept([this, alive = std::weak_ptr<bool>(alive_)](asio::error_code ec,
                                                                     asio::ip::tcp::socket socket) {
    if (alive.expired() || stopped_) return;
    if (!ec) {
      socket.set_option(asio::ip::tcp::no_delay(true), ec);
      auto link = std::make_shared<Link>(*this, std::move(socket), "");
      handshaking_.push_back(link);
      link->start();
    }
    accept();
  });
}

void PeerTransport::add_peer(const PeerAddress& address) {
  if (address.name == config_.node_name || peers_.contains(address.name)) return;
  Peer& peer = peers_[address.name];
  peer.address = address;
  peer.redial = std::make_unique<asio::steady_timer>(io_);
  if (config_.node_name < address.name) dial(peer);
}

void PeerTransport::remove_peer(const std::string& name) {
  auto found = peers_.find(name);
  if (found == peers_.end()) return;
  Peer peer = std::move(found->second);
  peers_.erase(found);
  peer.redial->cancel();
  if (peer.link) {
    bool was_up = peer.up;
    peer.link->detach();
    if (was_up && callbacks_.on_peer_down) callbacks_.on_peer_down(name);
  }
}

void PeerTransport::request_join(const PeerAddress& target, const cluster::Join& join,
                                 JoinDone done) {
  asio::error_code ec;
  asio::ip::tcp::endpoint endpoint(asio::ip::make_address(target.host, ec), target.port);
  if (ec) return done(unexpected("bad address '" + target.host + "': " + ec.message()));
  auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
  socket->open(endpoint.protocol(), ec);
  if (!ec) socket->bind({asio::ip::make_address(config_.bind_address, ec), 0}, ec);
  if (ec) return done(unexpected("cannot bind to " + config_.bind_address + ": " + ec.message()));
  // A member that does not answer the connection (packets dropped) is given up in time.
  auto deadline = std::make_shared<asio::steady_timer>(io_);
  deadline->expires_after(std::chrono::milliseconds(config_.handshake_timeout_ms));
  deadline->async_wait([socket](asio::error_code wait_error) {
    if (wait_error) return;
    asio::error_code ignored;
    socket->close(ignored);
  });
  socket->async_connect(
      endpoint, [this, socket, target, join, deadline, done = std::move(done),
                 alive = std::weak_ptr<bool>(alive_)](asio::error_code connect_error) mutable {
        deadline->cancel();
        if (alive.expired() || stopped_) return;
        if (connect_error) {
          return done(unexpected("cannot connect to " + target.host + ":" +
                                 std::to_string(target.port) + ": " + connect_error.message()));
        }
        auto link =
            std::make_shared<Link>(*this, std::move(*socket), target.name, join, std::move(done));
        handshaking_.push_back(link);
        link->start();
      });
}

void PeerTransport::dial(Peer& peer) {
  if (stopped_) return;
  asio::error_code ec;
  asio::ip::tcp::endpoint target(asio::ip::make_address(peer.address.host, ec), peer.address.port);
  if (ec) {
    spdlog::error("peer {}: bad address '{}': {}", peer.address.name, peer.address.host,
                  ec.message());
    return;
  }
  auto socket = std::make_shared<asio::ip::tcp::socket>(io_);
  socket->open(target.protocol(), ec);
  // Outgoing links leave from this node's own address (see the header).
  if (!ec) socket->bind({asio::ip::make_address(config_.bind_address, ec), 0}, ec);
  if (ec) {
    spdlog::error("peer {}: cannot bind to {}: {}", peer.address.name, config_.bind_address,
                  ec.message());
    schedule_redial(peer);
    return;
  }
  std::string name = peer.address.name;
  // A peer cut off drops the SYNs: the kernel would retry for minutes. Given up sooner, the
  // dial is made again (with the backoff), so a healed link comes back within seconds.
  auto deadline = std::make_shared<asio::steady_timer>(io_);
  deadline->expires_after(std::chrono::milliseconds(config_.handshake_timeout_ms));
  deadline->async_wait([socket](asio::error_code waited) {
    asio::error_code ignored;
    if (!waited) socket->close(ignored);
  });
  socket->async_connect(target, [this, socket, name, deadline, alive = std::weak_ptr<bool>(alive_)](
                                    asio::error_code connect_error) {
    deadline->cancel();
    if (alive.expired() || stopped_) return;
    auto found = peers_.find(name);
    if (found == peers_.end()) return;
    if (connect_error) {
      spdlog::debug("peer {}: cannot connect: {}", name, connect_error.message());
      schedule_redial(found->second);
      return;
    }
    asio::error_code ignored;
    socket->set_option(asio::ip::tcp::no_delay(true), ignored);
    auto link = std::make_shared<Link>(*this, std::move(*socket), name);
    found->second.link = link;
    link->start();
  });
}

void PeerTransport::schedule_redial(Peer& peer) {
  if (stopped_) return;
  peer.backoff_ms = peer.backoff_ms == 0 ? config_.reconnect_min_ms
                                         : std::min(peer.backoff_ms * 2, config_.reconnect_max_ms);
  std::string name = peer.address.name;
  peer.redial->expires_after(std::chrono::milliseconds(peer.backoff_ms));
  peer.redial->async_wait([this, name, alive = std::weak_ptr<bool>(alive_)](asio::error_code ec) {
    if (ec || alive.expired() || stopped_) return;
    auto found = peers_.find(name);
    if (found != peers_.end() && !found->second.link) dial(found->second);
  });
}

void PeerTransport::link_up(const std::shared_ptr<Link>& link, const cluster::Hello& hello) {
  std::erase(handshaking_, link);
  auto known = peers_.find(hello.node_name);
  if (known == peers_.end()) {
    // Forgotten while its link was being set up.
    link->close("not a peer any more", false);
    return;
  }
  Peer& peer = known->second;
  if (peer.up && peer.link != link) {
    // The peer's old connection is still here: the new one replaces it (the peer restarted
    // and dialled again before this side saw the old one close).
    auto old = std::move(peer.link);
    peer.up = false;
    old->close("replaced by a new connection", false);
  }
  peer.link = link;
  peer.up = true;
  peer.backoff_ms = 0;
  spdlog::info("peer {} (id {}, incarnation {}) is connected", hello.node_name, hello.node_id,
               hello.incarnation);
  if (callbacks_.on_peer_up) callbacks_.on_peer_up(hello);
}

void PeerTransport::link_closed(const std::shared_ptr<Link>& link, const std::string& reason,
                                bool refused) {
  if (stopped_) return;
  std::string who = link->peer_name().empty() ? link->expected_peer() : link->peer_name();
  if (refused) {
    ++refused_;
    spdlog::warn("peer link{} refused: {}", who.empty() ? "" : " with " + who, reason);
  }
  std::erase(handshaking_, link);
  for (auto& [name, peer] : peers_) {
    if (peer.link != link) continue;
    bool was_up = peer.up;
    peer.link.reset();
    peer.up = false;
    if (was_up) {
      spdlog::warn("peer {} is disconnected: {}", name, reason);
      if (callbacks_.on_peer_down) callbacks_.on_peer_down(name);
    }
    if (config_.node_name < name) schedule_redial(peer);
    break;
  }
}

bool PeerTransport::send(const std::string& peer_name, const raft::NodeBatch& batch) {
  return send_frame(peer_name, cluster::RaftBatch{batch});
}

bool PeerTransport::send_frame(const std::string& peer_name, const cluster::LinkFrame& body) {
  auto found = peers_.find(peer_name);
  if (found == peers_.end() || !found->second.up) {
    ++dropped_batches_;
    return false;
  }
  std::vector<uint8_t> frame;
  cluster::encode_frame(frame, body);
  if (!found->second.link->queue(std::move(frame))) {
    ++dropped_batches_;
    return false;
  }
  return true;
}

bool PeerTransport::connected(const std::string& peer_name) const {
  auto found = peers_.find(peer_name);
  return found != peers_.end() && found->second.up;
}

void PeerTransport::stop() {
  if (stopped_) return;
  stopped_ = true;
  asio::error_code ignored;
  acceptor_.close(ignored);
  for (auto& [name, peer] : peers_) {
    peer.redial->cancel();
    if (peer.link) peer.link->detach();
  }
  for (auto& link : handshaking_) link->detach();
  handshaking_.clear();
}

}  // namespace hamq::server
