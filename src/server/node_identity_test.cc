#include "server/node_identity.h"

#include <gtest/gtest.h>

#include <fstream>

namespace hamq::server {
namespace {

class NodeIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("hamq-identity-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  void write(const std::string& text) { std::ofstream(dir / "NODE") << text; }

  std::filesystem::path dir;
};

TEST_F(NodeIdentityTest, ANewDirectoryFoundsAClusterOfOneAndKeepsItsIdentity) {
  auto made = load_or_create_identity(dir, "n1", true, 1'000);
  ASSERT_TRUE(made.ok()) << made.error();
  EXPECT_EQ(made->node_name, "n1");
  EXPECT_EQ(made->node_id, 1u);
  EXPECT_EQ(made->incarnation, 1'000u);
  EXPECT_EQ(made->cluster_id.size(), 32u);
  auto again = load_or_create_identity(dir, "n1", false, 5'000);
  ASSERT_TRUE(again.ok()) << again.error();
  EXPECT_EQ(*again, *made);
  std::filesystem::create_directories(dir.string() + "-other");
  auto other = load_or_create_identity(dir.string() + "-other", "n1", true, 1'000);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->cluster_id, made->cluster_id);
  std::filesystem::remove_all(dir.string() + "-other");
}

TEST_F(NodeIdentityTest, ALogStartedAnewIsANewIncarnation) {
  auto made = load_or_create_identity(dir, "n1", true, 1'000);
  ASSERT_TRUE(made.ok());
  // The log was wiped, the identity kept: the incarnation grows, even if the clock went back.
  auto wiped = load_or_create_identity(dir, "n1", true, 500);
  ASSERT_TRUE(wiped.ok());
  EXPECT_EQ(wiped->cluster_id, made->cluster_id);
  EXPECT_EQ(wiped->incarnation, 1'001u);
  auto later = load_or_create_identity(dir, "n1", true, 9'000);
  ASSERT_TRUE(later.ok());
  EXPECT_EQ(later->incarnation, 9'000u);
  auto kept = load_or_create_identity(dir, "n1", false, 20'000);
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->incarnation, 9'000u);
}

TEST_F(NodeIdentityTest, ASeedTakesTheClusterAndNodeIdItsSeedsGiveIt) {
  auto made = load_or_create_identity(dir, "n2", true, 1'000,
                                      {.cluster_id = std::string(32, 'a'), .node_id = 2});
  ASSERT_TRUE(made.ok()) << made.error();
  EXPECT_EQ(made->cluster_id, std::string(32, 'a'));
  EXPECT_EQ(made->node_id, 2u);
  // Once written it is what the directory is, whatever the seeds say later.
  auto kept = load_or_create_identity(dir, "n2", false, 2'000,
                                      {.cluster_id = std::string(32, 'c'), .node_id = 3});
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->cluster_id, std::string(32, 'a'));
  EXPECT_EQ(kept->node_id, 2u);
}

TEST_F(NodeIdentityTest, ADirectoryRefusesAnotherNodeName) {
  ASSERT_TRUE(load_or_create_identity(dir, "n1", true, 1'000).ok());
  auto refused = load_or_create_identity(dir, "n2", false, 2'000);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().find("belongs to node 'n1', not 'n2'"), std::string::npos)
      << refused.error();
}

TEST_F(NodeIdentityTest, ABadLineIsNamedWithItsFileAndLine) {
  write("# comment\nformat 1\nnode_id zero\n");
  auto bad = load_or_create_identity(dir, "n1", false, 1'000);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), (dir / "NODE").string() + ":3: node_id must be a positive integer");
  write("format 1\ncolour blue\n");
  bad = load_or_create_identity(dir, "n1", false, 1'000);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error(), (dir / "NODE").string() + ":2: unknown key 'colour'");
  write("format 1\nnode_name n1\n");
  bad = load_or_create_identity(dir, "n1", false, 1'000);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().find("incomplete"), std::string::npos);
}

}  // namespace
}  // namespace hamq::server
