#include "server/node_identity.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "server/cluster_config.h"

namespace hamq::server {
namespace {

constexpr const char* file_name = "NODE";
constexpr int format_version = 1;

std::string random_cluster_id() {
  std::random_device device;
  std::string id;
  static constexpr char digits[] = "0123456789abcdef";
  for (int i = 0; i < 32; ++i) id.push_back(digits[device() % 16]);
  return id;
}

std::string encode(const NodeIdentity& identity) {
  std::ostringstream out;
  out << "# hamq node identity: written by hamq-server; do not edit, do not copy to another node\n"
      << "format " << format_version << "\n"
      << "cluster_id " << identity.cluster_id << "\n"
      << "node_name " << identity.node_name << "\n"
      << "node_id " << identity.node_id << "\n"
      << "incarnation " << identity.incarnation << "\n";
  return out.str();
}

}  // namespace

Result<void, std::string> write_identity(const std::filesystem::path& data_dir,
                                         const NodeIdentity& identity) {
  auto path = data_dir / file_name;
  auto temporary = data_dir / (std::string(file_name) + ".tmp");
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << encode(identity);
    out.flush();
    if (!out) return unexpected("cannot write " + temporary.string());
  }
  if (auto synced = sync_file(temporary, false); !synced.ok()) return synced;
  std::error_code ec;
  std::filesystem::rename(temporary, path, ec);
  if (ec) return unexpected("cannot rename " + temporary.string() + ": " + ec.message());
  return sync_file(data_dir, true);
}

namespace {

bool parse_u64(const std::string& text, uint64_t& value) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  return error == std::errc() && end == text.data() + text.size();
}

}  // namespace

Result<uint64_t, std::string> begin_life(const std::filesystem::path& data_dir) {
  auto path = data_dir / "LIFE";
  uint64_t life = 0;
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    std::ifstream in(path);
    std::string line;
    if (!in || !std::getline(in, line) || !parse_u64(line, life) || life == UINT64_MAX) {
      return unexpected(path.string() + ":1: a number of starts was expected");
    }
  }
  ++life;
  auto temporary = data_dir / "LIFE.tmp";
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << life << '\n';
    out.flush();
    if (!out) return unexpected("cannot write " + temporary.string());
  }
  if (auto synced = sync_file(temporary, false); !synced.ok()) return unexpected(synced.error());
  std::filesystem::rename(temporary, path, ec);
  if (ec) return unexpected("cannot rename " + temporary.string() + ": " + ec.message());
  if (auto synced = sync_file(data_dir, true); !synced.ok()) return unexpected(synced.error());
  return life;
}

namespace {

Result<NodeIdentity, std::string> read_identity(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return unexpected("cannot read " + path.string());
  NodeIdentity identity;
  bool format_seen = false;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (line.empty() || line[0] == '#') continue;
    auto where = path.string() + ":" + std::to_string(number);
    size_t space = line.find(' ');
    if (space == std::string::npos) return unexpected(where + ": expected 'key value'");
    std::string key = line.substr(0, space);
    std::string value = line.substr(space + 1);
    uint64_t number_value = 0;
    if (key == "format") {
      if (value != std::to_string(format_version)) {
        return unexpected(where + ": unknown format '" + value + "'");
      }
      format_seen = true;
    } else if (key == "cluster_id") {
      if (value.size() != 32 || value.find_first_not_of("0123456789abcdef") != std::string::npos) {
        return unexpected(where + ": a cluster id is 32 lowercase hex digits");
      }
      identity.cluster_id = value;
    } else if (key == "node_name") {
      if (value.empty()) return unexpected(where + ": empty node name");
      identity.node_name = value;
    } else if (key == "node_id" || key == "incarnation") {
      if (!parse_u64(value, number_value) || number_value == 0) {
        return unexpected(where + ": " + key + " must be a positive integer");
      }
      (key == "node_id" ? identity.node_id : identity.incarnation) = number_value;
    } else {
      return unexpected(where + ": unknown key '" + key + "'");
    }
  }
  if (!format_seen || identity.cluster_id.empty() || identity.node_name.empty() ||
      identity.node_id == 0 || identity.incarnation == 0) {
    return unexpected(path.string() +
                      ": incomplete (needs format, cluster_id, node_name, node_id, incarnation)");
  }
  return identity;
}

}  // namespace

std::string default_node_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "hamq@localhost";
  return std::string("hamq@") + host;
}

Result<NodeIdentity, std::string> load_or_create_identity(const std::filesystem::path& data_dir,
                                                          const std::string& node_name,
                                                          bool log_is_new, uint64_t now_us,
                                                          const Founding& founding) {
  auto path = data_dir / file_name;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    NodeIdentity identity{founding.cluster_id.empty() ? random_cluster_id() : founding.cluster_id,
                          node_name, founding.node_id, now_us};
    if (auto written = write_identity(data_dir, identity); !written.ok()) {
      return unexpected(written.error());
    }
    return identity;
  }
  auto identity = read_identity(path);
  if (!identity.ok()) return identity;
  if (identity->node_name != node_name) {
    return unexpected("data directory " + data_dir.string() + " belongs to node '" +
                      identity->node_name + "', not '" + node_name +
                      "' (start it with --node-name " + identity->node_name + ")");
  }
  if (log_is_new) {
    // The log this identity stood for is gone: peers must not count what it held.
    identity->incarnation = std::max(now_us, identity->incarnation + 1);
    if (auto written = write_identity(data_dir, *identity); !written.ok()) {
      return unexpected(written.error());
    }
  }
  return identity;
}

}  // namespace hamq::server
