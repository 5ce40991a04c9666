// Runs the cluster simulator over a budget of seeds in the test suite. The budget is set by
// HAMQ_SIM_SEEDS (default 2,000 three-node and 1,000 five-node runs); the soak command is in
// docs/raft.md. A failing seed prints the command that replays it.
#include "raft/sim/simulator.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace hamq::raft::sim {
namespace {

uint64_t seed_budget() {
  const char* text = std::getenv("HAMQ_SIM_SEEDS");
  return text ? std::strtoull(text, nullptr, 10) : 2000;
}

void run_seeds(uint64_t first, uint64_t count, uint32_t nodes, uint32_t groups) {
  for (uint64_t seed = first; seed < first + count; ++seed) {
    SimReport report = run_simulation(SimOptions{.seed = seed, .nodes = nodes, .groups = groups});
    ASSERT_TRUE(report.ok) << report.failure << "\nreplay: hamq-sim --seed " << seed << " --nodes "
                           << nodes << " --groups " << groups << " --trace";
    EXPECT_GT(report.acknowledged, 0u) << "seed " << seed;
  }
}

TEST(Simulator, ThreeNodeClustersPassEveryCheck) {
  run_seeds(1, seed_budget(), 3, 3);
}

TEST(Simulator, FiveNodeClustersPassEveryCheck) {
  run_seeds(100'001, seed_budget() / 2, 5, 3);
}

TEST(Simulator, ManyGroupsPerNodePassEveryCheck) {
  run_seeds(200'001, 4, 3, 40);
}

TEST(Simulator, HeartbeatsOfManyGroupsAreCoalesced) {
  // 1,000 idle groups on 3 nodes for 2 simulated seconds (200 heartbeat intervals): each node
  // sends about one batch per peer per interval, not one message per group.
  SimReport report =
      run_simulation(SimOptions{.seed = 7, .nodes = 3, .groups = 1000, .idle_after_us = 2'000'000});
  ASSERT_TRUE(report.ok) << report.failure;
  EXPECT_GT(report.idle_heartbeats, 1000u * 2 * 180);  // every leader beats to 2 peers per tick
  EXPECT_LT(report.idle_batches, 3u * 2 * 220 * 2);    // ~one batch per peer per tick, each way
}

// Seeds that once failed (each found a bug in the core or the simulator); kept as regressions.
TEST(Simulator, SeedsThatOnceFailedPass) {
  for (uint64_t seed : {1, 6, 13, 34, 35, 47, 98, 2365, 15723}) run_seeds(seed, 1, 3, 3);
  run_seeds(40, 1, 5, 3);
}

TEST(Simulator, SameSeedReplaysTheSameRun) {
  SimOptions options{.seed = 4242, .nodes = 5, .groups = 2};
  SimReport first = run_simulation(options);
  SimReport second = run_simulation(options);
  EXPECT_EQ(first.events, second.events);
  EXPECT_EQ(first.messages, second.messages);
  EXPECT_EQ(first.proposals, second.proposals);
  EXPECT_EQ(first.acknowledged, second.acknowledged);
  EXPECT_EQ(first.crashes, second.crashes);
  EXPECT_EQ(first.leaders_elected, second.leaders_elected);
  EXPECT_EQ(first.liveness_us, second.liveness_us);
}

TEST(Simulator, RunsHaveFaultsWorthCheckingFor) {
  // Over a few seeds, every kind of fault and protocol activity happens.
  SimReport total;
  for (uint64_t seed = 1; seed <= 40; ++seed) {
    SimReport report = run_simulation(SimOptions{.seed = seed, .nodes = 3, .groups = 3});
    total.crashes += report.crashes;
    total.disks_lost += report.disks_lost;
    total.snapshots_installed += report.snapshots_installed;
    total.membership_changes += report.membership_changes;
    total.transfers += report.transfers;
    total.leaders_elected += report.leaders_elected;
  }
  EXPECT_GT(total.crashes, 40u);
  EXPECT_GT(total.disks_lost, 0u);
  EXPECT_GT(total.snapshots_installed, 40u);
  EXPECT_GT(total.membership_changes, 40u);
  EXPECT_GT(total.transfers, 10u);
  EXPECT_GT(total.leaders_elected, 200u);
}

TEST(Simulator, CheckersCatchARuntimeThatAcknowledgesBeforeFsync) {
  int failed = 0;
  std::string example;
  for (uint64_t seed = 1; seed <= 1000 && failed == 0; ++seed) {
    SimReport report = run_simulation(
        SimOptions{.seed = seed, .nodes = 3, .groups = 3, .break_ready_contract = true});
    if (!report.ok) {
      ++failed;
      example = report.failure;
    }
  }
  EXPECT_GT(failed, 0);
  RecordProperty("example", example);
}

}  // namespace
}  // namespace hamq::raft::sim
