// GroupCommitWriter: the thread that makes a Wal durable for the server and the benchmark. It
// loops "take everything pending, write it with one append, fdatasync, report": a batch is
// whatever was submitted while the previous fdatasync ran, so no delay is added at low load and
// batches grow by themselves under high load.
//
// Use: submit to the Wal from any thread, then call notify(). `on_durable` runs on the writer
// thread after each batch's fdatasync, with what became durable; it must be quick (hand the
// result to the owning loops) and must not call flush().
//
// Failures: on no_space the batch stays pending and the writer retries every retry_interval
// (publishers are blocked by the caller meanwhile, as submits return busy); on any other error the
// log has stopped for good, `on_failure` is called once and the thread ends.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

#include "storage/wal.h"

namespace hamq::storage {

class GroupCommitWriter {
 public:
  using DurableListener = std::function<void(const FlushResult&)>;
  using FailureListener = std::function<void(const Error&)>;
  // The disk is full: the batch waits (called on each failed try, on the writer thread).
  using NoSpaceListener = std::function<void()>;

  static constexpr std::chrono::milliseconds retry_interval{50};

  // `wal` must outlive the writer.
  GroupCommitWriter(Wal& wal, DurableListener on_durable, FailureListener on_failure = {},
                    NoSpaceListener on_no_space = {});
  // Writes what is pending, then stops the thread.
  ~GroupCommitWriter();
  GroupCommitWriter(const GroupCommitWriter&) = delete;
  GroupCommitWriter& operator=(const GroupCommitWriter&) = delete;

  // Wakes the writer: something was submitted.
  void notify();

  uint64_t batches_written() const;
  uint64_t bytes_written() const;

 private:
  void run();

  Wal& wal_;
  DurableListener on_durable_;
  FailureListener on_failure_;
  NoSpaceListener on_no_space_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool work_ = false;
  bool stopping_ = false;
  uint64_t batches_written_ = 0;
  uint64_t bytes_written_ = 0;
  std::thread thread_;  // last: starts once everything above is ready
};

}  // namespace hamq::storage
