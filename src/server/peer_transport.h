// PeerTransport: the links between this node and its peers (issue 14; frames in
// docs/formats/link.md, codec in src/cluster/link_codec.h).
//
// One TCP connection per pair of nodes: the node whose name sorts first dials, the other
// accepts, so both agree on which connection is the pair's. Outgoing connections leave from the
// node's own address (`bind_address`), so a test can cut the links between nodes of one machine
// with iptables while clients still reach every node.
//
// A connection starts with a handshake, the same both ways: each side sends a hello (cluster id,
// node name and id, incarnation, a fresh random nonce), and answers the peer's hello with a proof
// (HMAC-SHA256 keyed by the cluster secret over the peer's nonce and both names). Until its proof
// checks out a peer may send only small frames; a peer of another cluster, an unknown name, a wrong
// proof, a bad frame or a handshake that takes longer than `handshake_timeout_ms` is dropped and
// logged (`refused()` counts them). The secret itself never crosses the wire.
//
// After the handshake the connection carries batches of Raft messages (raft::NodeBatch) both
// ways. send() queues a batch as one frame; the queue per peer is bounded in bytes
// (`send_queue_bytes_max`): past it, or while the peer is not connected, the batch is dropped and
// counted, which Raft tolerates (it resends what was not acknowledged). A connection that closes
// is reported at once (on_peer_down), so the groups learn of a dead process in milliseconds; one
// that carries nothing for `idle_timeout_ms` (each side sends at least every `keepalive_ms`) is
// closed, so a hung or cut-off peer is down within seconds. A dialled peer is dialled again with
// a backoff doubling from `reconnect_min_ms` to `reconnect_max_ms`; a dial that does not connect
// within `handshake_timeout_ms` is given up and made again.
//
// Thread: everything runs on the io_context given, and so do the callbacks.
#pragma once

#include <asio.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "cluster/link_codec.h"
#include "common/result.h"
#include "server/cluster_config.h"

namespace hamq::server {

struct PeerTransportConfig {
  std::string cluster_id;
  std::string node_name;
  uint64_t node_id = 0;
  uint64_t incarnation = 0;
  std::string bind_address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  std::string secret;
  uint64_t send_queue_bytes_max = 64ull << 20;
  uint64_t handshake_timeout_ms = 5'000;  // also how long a dial may take to connect
  // An established link sends a frame at least this often, and is closed when nothing has come
  // from the peer for idle_timeout_ms (a peer that hangs, or a link cut silently).
  uint64_t keepalive_ms = 250;
  uint64_t idle_timeout_ms = 2'000;
  uint64_t reconnect_min_ms = 50;
  uint64_t reconnect_max_ms = 2'000;
};

struct PeerTransportCallbacks {
  // A peer completed its handshake; its hello says who it is.
  std::function<void(const cluster::Hello& peer)> on_peer_up;
  // The connection to a peer that was up is gone.
  std::function<void(const std::string& peer_name)> on_peer_down;
  std::function<void(const std::string& peer_name, raft::NodeBatch batch)> on_batch;
  // A proposal forwarded by the peer, and the answer to one this node forwarded.
  std::function<void(const std::string& peer_name, cluster::Propose propose)> on_propose;
  std::function<void(const std::string& peer_name, const cluster::Proposed& proposed)> on_proposed;
  // A node without a member of a queue's group uses it through this one, and the answers
  // (Broker::relay_forwarded and relay_answered).
  std::function<void(const std::string& peer_name, cluster::RelayForward forward)> on_relay_forward;
  std::function<void(const std::string& peer_name, cluster::RelayAnswer answer)> on_relay_answer;
  // A blank node that proved it knows the cluster secret asks to join; `answer` sends the
  // cluster's answer and closes the link (it may be called later, or never if the link closed).
  // `reached_at`: the address of this node the joining node connected to.
  using JoinAnswerFn = std::function<void(const cluster::JoinAnswer&)>;
  std::function<void(const cluster::Hello& joiner, const cluster::Join& join,
                     const std::string& reached_at, JoinAnswerFn answer)>
      on_join;
};

class PeerTransport {
 public:
  PeerTransport(asio::io_context& io, PeerTransportConfig config, PeerTransportCallbacks callbacks);
  ~PeerTransport();
  PeerTransport(const PeerTransport&) = delete;
  PeerTransport& operator=(const PeerTransport&) = delete;

  // Listens on bind_address:port.
  Result<void, std::string> start();
  uint16_t port() const { return port_; }
  // Keeps a link to the peer: dialled from here if this node's name sorts first, else awaited.
  // Only known peers are accepted.
  void add_peer(const PeerAddress& peer);
  // Stops keeping a link to the peer (it was forgotten) and closes the one there is.
  void remove_peer(const std::string& name);
  // On a blank node (cluster_id empty): asks `target`, a member of a cluster, to make this node
  // one of its members. `done` gets the answer, or why there was none.
  using JoinDone = std::function<void(Result<cluster::JoinAnswer, std::string>)>;
  void request_join(const PeerAddress& target, const cluster::Join& join, JoinDone done);
  // Queues a batch for the peer: false when it was dropped (not connected, or queue full).
  bool send(const std::string& peer_name, const raft::NodeBatch& batch);
  // Queues a propose or proposed frame for the peer, as send() does a batch.
  bool send_frame(const std::string& peer_name, const cluster::LinkFrame& frame);
  bool connected(const std::string& peer_name) const;
  // Closes every link and the listener; nothing is reported after it.
  void stop();

  uint64_t refused() const { return refused_; }
  uint64_t dropped_batches() const { return dropped_batches_; }

  class Link;

 private:
  struct Peer {
    PeerAddress address;
    std::shared_ptr<Link> link;  // the current connection, handshake done or not
    bool up = false;
    uint64_t backoff_ms = 0;
    std::unique_ptr<asio::steady_timer> redial;
  };
  void accept();
  void dial(Peer& peer);
  void schedule_redial(Peer& peer);
  // From Link.
  bool knows(const std::string& name) const { return peers_.contains(name); }
  void link_up(const std::shared_ptr<Link>& link, const cluster::Hello& hello);
  // `refused`: the peer broke the protocol or failed the handshake (counted and logged).
  void link_closed(const std::shared_ptr<Link>& link, const std::string& reason, bool refused);

  asio::io_context& io_;
  PeerTransportConfig config_;
  PeerTransportCallbacks callbacks_;
  asio::ip::tcp::acceptor acceptor_;
  uint16_t port_ = 0;
  std::map<std::string, Peer> peers_;
  std::vector<std::shared_ptr<Link>> handshaking_;  // accepted, not yet known by name
  bool stopped_ = false;
  // Handlers of the acceptor, dials and redial timers may run after the transport is gone (the
  // io_context outlives it): they hold this weakly and do nothing once it expired.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  uint64_t refused_ = 0;
  uint64_t dropped_batches_ = 0;
};

// The handshake's proof: HMAC-SHA256 keyed by `secret` over a label, `nonce` (of the node that
// checks it) and the two names, prover first.
std::string link_proof(const std::string& secret, const std::string& nonce,
                       const std::string& prover, const std::string& checker);

}  // namespace hamq::server
