// Simulator: a whole cluster of Raft members (N nodes, G groups each) in one process, on a
// simulated network, disk and clock, all driven by one seeded generator, so that a run is
// replayed exactly from its seed (the approach of TigerBeetle's VOPR and FoundationDB).
//
// A run has a fault phase (partitions of the shapes Jepsen uses, message loss, duplication and
// reordering, crashes with unsynced writes lost or torn, failed writes and fsyncs, clock drift,
// leadership transfers and membership changes) with a client proposing commands throughout; then
// the faults stop and the run must show liveness: every group elects a leader, gets its members
// back and commits a new command everywhere within a bound of simulated time.
//
// Checked after every step: election safety (one leader per term), leader append-only, state
// machine safety (every member applies the same entry at each index, checked through a running
// hash); when a leader takes office: leader completeness; periodically and at the end: log
// matching; at the end: no acknowledged command lost.
#pragma once

#include <cstdint>
#include <string>

namespace hamq::raft::sim {

struct SimOptions {
  uint64_t seed = 1;
  uint32_t nodes = 3;
  uint32_t groups = 3;
  uint64_t fault_phase_us = 10'000'000;
  uint64_t liveness_bound_us = 15'000'000;
  // After the run has recovered, stay on this long with no client and count what idle groups
  // send (SimReport::idle_*).
  uint64_t idle_after_us = 0;
  bool trace = false;           // every event to stderr
  bool trace_messages = false;  // and every message delivered
  // A deliberately broken runtime, to show the checkers catch it: sends the messages that
  // promise durability before the fsync instead of after.
  bool break_ready_contract = false;
};

struct SimReport {
  bool ok = true;
  std::string failure;  // the first checker failure, with the simulated time
  uint64_t events = 0;
  uint64_t messages = 0;    // Raft messages sent
  uint64_t batches = 0;     // node-to-node batches they travelled in
  uint64_t heartbeats = 0;  // heartbeats among the messages, coalesced into the batches
  uint64_t fsyncs = 0;      // one per node per group-commit batch
  uint64_t proposals = 0;
  uint64_t acknowledged = 0;
  uint64_t leaders_elected = 0;
  uint64_t crashes = 0;
  uint64_t disks_lost = 0;
  uint64_t snapshots_installed = 0;
  uint64_t membership_changes = 0;
  uint64_t transfers = 0;
  uint64_t liveness_us = 0;
  uint64_t idle_batches = 0;     // batches sent during the idle time (idle_after_us)
  uint64_t idle_heartbeats = 0;  // heartbeats carried in them  // from the end of the faults to the
                                 // last group's final commit
};

SimReport run_simulation(const SimOptions& options);

}  // namespace hamq::raft::sim
