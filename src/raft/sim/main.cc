// hamq-sim: runs the deterministic cluster simulator over a range of seeds.
//
//   hamq-sim --seed 1 --count 10000 --nodes 3 --groups 3     a soak over 10,000 seeds
//   hamq-sim --seed 4242 --trace                             replays one run, event by event
//
// Exits 1 at the first seed whose run fails a checker, printing the seed to replay.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cinttypes>
#include <cstdio>

#include "raft/sim/simulator.h"

int main(int argc, char** argv) {
  CLI::App app{"hamq-sim: the Raft cluster simulator"};
  hamq::raft::sim::SimOptions options;
  uint64_t count = 1;
  app.add_option("--seed", options.seed, "first seed")->capture_default_str();
  app.add_option("--count", count, "how many seeds, from --seed on")->capture_default_str();
  app.add_option("--nodes", options.nodes, "nodes in the cluster")
      ->check(CLI::Range(1, 9))
      ->capture_default_str();
  app.add_option("--groups", options.groups, "Raft groups on each node")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--fault-seconds", options.fault_phase_us, "simulated microseconds of faults")
      ->capture_default_str();
  app.add_flag("--trace", options.trace, "print every event of the run");
  app.add_flag("--trace-messages", options.trace_messages, "and every message delivered");
  CLI11_PARSE(app, argc, argv);

  auto started = std::chrono::steady_clock::now();
  uint64_t first = options.seed;
  uint64_t totals[5] = {0, 0, 0, 0, 0};
  for (uint64_t seed = first; seed < first + count; ++seed) {
    options.seed = seed;
    hamq::raft::sim::SimReport report = hamq::raft::sim::run_simulation(options);
    totals[0] += report.proposals;
    totals[1] += report.acknowledged;
    totals[2] += report.crashes;
    totals[3] += report.leaders_elected;
    totals[4] += report.disks_lost;
    if (count == 1 || !report.ok) {
      std::printf("seed %" PRIu64 ": %s; %" PRIu64 " events, %" PRIu64 " messages, %" PRIu64
                  " proposals, %" PRIu64 " acknowledged, %" PRIu64 " leaders, %" PRIu64
                  " crashes, %" PRIu64 " disks lost, %" PRIu64 " snapshots installed, %" PRIu64
                  " heartbeats in %" PRIu64 " batches, %" PRIu64 " membership changes, %" PRIu64
                  " transfers, recovered in %.3f s\n",
                  seed, report.ok ? "ok" : report.failure.c_str(), report.events, report.messages,
                  report.proposals, report.acknowledged, report.leaders_elected, report.crashes,
                  report.disks_lost, report.snapshots_installed, report.heartbeats, report.batches,
                  report.membership_changes, report.transfers,
                  static_cast<double>(report.liveness_us) / 1e6);
    }
    if (!report.ok) {
      std::printf("replay: hamq-sim --seed %" PRIu64 " --nodes %u --groups %u --trace\n", seed,
                  options.nodes, options.groups);
      return 1;
    }
  }
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("%" PRIu64 " seeds from %" PRIu64
              " (%u nodes, %u groups): all checks passed; %" PRIu64 " proposals, %" PRIu64
              " acknowledged, %" PRIu64 " crashes, %" PRIu64 " disks lost, %" PRIu64
              " leaders elected; %.1f s\n",
              count, first, options.nodes, options.groups, totals[0], totals[1], totals[2],
              totals[4], totals[3], seconds);
  return 0;
}
