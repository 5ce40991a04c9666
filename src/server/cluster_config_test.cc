#include "server/cluster_config.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

namespace hamq::server {
namespace {

TEST(ClusterSeeds, AreNamesAtHostsAndPortsInOrder) {
  auto seeds = parse_cluster_seeds("n1@127.0.0.11:25672,n2@127.0.0.12:25673,hamq@box@[::1]:25674");
  ASSERT_TRUE(seeds.ok()) << seeds.error();
  ASSERT_EQ(seeds->size(), 3u);
  EXPECT_EQ((*seeds)[0], (PeerAddress{"n1", "127.0.0.11", 25672}));
  EXPECT_EQ((*seeds)[1], (PeerAddress{"n2", "127.0.0.12", 25673}));
  EXPECT_EQ((*seeds)[2], (PeerAddress{"hamq@box", "::1", 25674}));
  EXPECT_EQ(seed_node_id(*seeds, "n2"), 2u);
  EXPECT_EQ(seed_node_id(*seeds, "n4"), std::nullopt);
  EXPECT_TRUE(parse_cluster_seeds("")->empty());
}

TEST(ClusterSeeds, ABadItemIsNamed) {
  for (const char* bad : {"n1", "n1@host", "@host:1", "n1@:1", "n1@host:0", "n1@host:65536",
                          "n1@host:12x", "n1@a:1,,n2@b:2", "n1@a:1,n1@b:2"}) {
    auto seeds = parse_cluster_seeds(bad);
    ASSERT_FALSE(seeds.ok()) << bad;
    EXPECT_NE(seeds.error().find("cluster seed '"), std::string::npos) << seeds.error();
  }
}

TEST(ClusterSeeds, TheClusterIdIsTheSameForTheSameListAndOtherwiseNot) {
  auto a = parse_cluster_seeds("n1@127.0.0.11:25672,n2@127.0.0.12:25672");
  auto b = parse_cluster_seeds("n2@127.0.0.12:25672,n1@127.0.0.11:25672");
  std::string id = seeds_cluster_id(*a);
  EXPECT_EQ(id.size(), 32u);
  EXPECT_EQ(id, seeds_cluster_id(*parse_cluster_seeds("n1@127.0.0.11:25672,n2@127.0.0.12:25672")));
  EXPECT_NE(id, seeds_cluster_id(*b));  // the order gives the node ids: another cluster
}

TEST(ClusterSecret, IsMadeOnceOwnerOnlyAndReadBack) {
  auto dir = std::filesystem::temp_directory_path() / ("hamq-secret-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto path = dir / "secret";
  auto made = load_or_create_cluster_secret(path);
  ASSERT_TRUE(made.ok()) << made.error();
  EXPECT_EQ(made->size(), 64u);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = load_or_create_cluster_secret(path);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *made);
  std::ofstream(path, std::ios::trunc) << "\n";
  auto empty = load_or_create_cluster_secret(path);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.error().find(path.string()), std::string::npos);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hamq::server

namespace hamq::server {
namespace {

TEST(ClusterNodesFile, RoundTripsAndABadLineIsNamed) {
  auto dir = std::filesystem::temp_directory_path() / ("hamq-nodes-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto path = dir / cluster_nodes_file;
  auto none = load_cluster_nodes(path);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());  // no file: nothing known
  std::vector<KnownNode> nodes = {{1, {"n1", "127.0.0.11", 25672}}, {4, {"n4", "::1", 25673}}};
  ASSERT_TRUE(save_cluster_nodes(path, nodes).ok());
  auto loaded = load_cluster_nodes(path);
  ASSERT_TRUE(loaded.ok()) << loaded.error();
  EXPECT_EQ(*loaded, nodes);
  std::ofstream(path, std::ios::app) << "5 n5 127.0.0.15\n";
  auto bad = load_cluster_nodes(path);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), path.string() + ":4: expected ID NAME HOST PORT");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace hamq::server
