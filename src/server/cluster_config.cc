#include "server/cluster_config.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hamq::server {

namespace {

std::string hex(const unsigned char* bytes, size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out.push_back(digits[bytes[i] >> 4]);
    out.push_back(digits[bytes[i] & 15]);
  }
  return out;
}

bool valid_name(std::string_view name) {
  return valid_node_name(name);
}

}  // namespace

Result<std::vector<PeerAddress>, std::string> parse_cluster_seeds(std::string_view text) {
  std::vector<PeerAddress> seeds;
  if (text.empty()) return seeds;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string_view item =
        text.substr(start, comma == std::string_view::npos ? text.npos : comma - start);
    start = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
    std::string what = "cluster seed '" + std::string(item) + "'";
    size_t at = item.rfind('@');
    size_t colon = item.rfind(':');
    if (at == std::string_view::npos || colon == std::string_view::npos || colon < at) {
      return unexpected(what + " is not NAME@HOST:PORT");
    }
    PeerAddress seed;
    seed.name = std::string(item.substr(0, at));
    std::string_view host = item.substr(at + 1, colon - at - 1);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    seed.host = std::string(host);
    std::string_view port = item.substr(colon + 1);
    if (!valid_name(seed.name)) return unexpected(what + " has no valid node name");
    if (seed.host.empty()) return unexpected(what + " has no host");
    uint32_t value = 0;
    if (port.empty() || port.size() > 5) return unexpected(what + " has no valid port");
    for (char c : port) {
      if (c < '0' || c > '9') return unexpected(what + " has no valid port");
      value = value * 10 + static_cast<uint32_t>(c - '0');
    }
    if (value == 0 || value > 65535) return unexpected(what + " has no valid port");
    seed.port = static_cast<uint16_t>(value);
    for (const PeerAddress& other : seeds) {
      if (other.name == seed.name) return unexpected(what + " names a node twice");
    }
    seeds.push_back(std::move(seed));
  }
  return seeds;
}

std::string seeds_cluster_id(const std::vector<PeerAddress>& seeds) {
  std::string text;
  for (const PeerAddress& seed : seeds) {
    text += seed.name + "@" + seed.host + ":" + std::to_string(seed.port) + "\n";
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(text.data(), text.size(), digest, &size, EVP_sha256(), nullptr);
  return hex(digest, 16);
}

std::optional<uint64_t> seed_node_id(const std::vector<PeerAddress>& seeds, std::string_view name) {
  for (size_t i = 0; i < seeds.size(); ++i) {
    if (seeds[i].name == name) return i + 1;
  }
  return std::nullopt;
}

Result<std::string, std::string> load_or_create_cluster_secret(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    std::string secret;
    if (!in || !std::getline(in, secret)) {
      return unexpected("cannot read the cluster secret file " + path.string());
    }
    if (secret.empty()) return unexpected("the cluster secret file " + path.string() + " is empty");
    return secret;
  }
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) {
    return unexpected(std::string("cannot make a cluster secret: no randomness"));
  }
  std::string secret = hex(bytes, sizeof bytes);
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return unexpected("cannot create the cluster secret file " + path.string() + ": " +
                      std::strerror(errno));
  }
  std::string line = secret + "\n";
  bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) &&
            ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) return unexpected("cannot write the cluster secret file " + path.string());
  return secret;
}

}  // namespace hamq::server

namespace hamq::server {

bool valid_node_name(std::string_view name) {
  if (name.empty() || name.size() > 255) return false;
  for (char c : name) {
    if (c == ',' || std::isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

Result<std::vector<KnownNode>, std::string> load_cluster_nodes(const std::filesystem::path& path) {
  std::vector<KnownNode> nodes;
  std::ifstream in(path);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return nodes;
    return unexpected("cannot read " + path.string());
  }
  std::string line;
  for (size_t number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    KnownNode node;
    unsigned port = 0;
    std::string rest;
    if (!(fields >> node.id >> node.address.name >> node.address.host >> port) ||
        (fields >> rest) || node.id == 0 || port == 0 || port > 65535) {
      return unexpected(path.string() + ":" + std::to_string(number) +
                        ": expected ID NAME HOST PORT");
    }
    node.address.port = static_cast<uint16_t>(port);
    nodes.push_back(std::move(node));
  }
  return nodes;
}

Result<void, std::string> save_cluster_nodes(const std::filesystem::path& path,
                                             const std::vector<KnownNode>& nodes) {
  auto temporary = path;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << "# the cluster's members as this node last knew them: written by hamq-server\n";
    for (const KnownNode& node : nodes) {
      out << node.id << ' ' << node.address.name << ' ' << node.address.host << ' '
          << node.address.port << '\n';
    }
    out.flush();
    if (!out) return unexpected("cannot write " + temporary.string());
  }
  if (auto synced = sync_file(temporary, false); !synced.ok()) return synced;
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) return unexpected("cannot rename " + temporary.string() + ": " + ec.message());
  return sync_file(path.parent_path().empty() ? "." : path.parent_path(), true);
}

Result<void, std::string> sync_file(const std::filesystem::path& path, bool directory) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return unexpected("cannot open " + path.string() + ": " + std::strerror(errno));
  int synced = ::fsync(fd);
  int error = errno;
  ::close(fd);
  if (synced != 0) return unexpected("cannot fsync " + path.string() + ": " + std::strerror(error));
  return Ok{};
}

}  // namespace hamq::server
