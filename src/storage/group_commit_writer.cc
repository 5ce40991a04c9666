#include "storage/group_commit_writer.h"

namespace hamq::storage {

GroupCommitWriter::GroupCommitWriter(Wal& wal, DurableListener on_durable,
                                     FailureListener on_failure, NoSpaceListener on_no_space)
    : wal_(wal),
      on_durable_(std::move(on_durable)),
      on_failure_(std::move(on_failure)),
      on_no_space_(std::move(on_no_space)),
      thread_([this] { run(); }) {}

GroupCommitWriter::~GroupCommitWriter() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void GroupCommitWriter::notify() {
  {
    std::lock_guard lock(mutex_);
    if (work_) return;
    work_ = true;
  }
  wake_.notify_one();
}

uint64_t GroupCommitWriter::batches_written() const {
  std::lock_guard lock(mutex_);
  return batches_written_;
}

uint64_t GroupCommitWriter::bytes_written() const {
  std::lock_guard lock(mutex_);
  return bytes_written_;
}

void GroupCommitWriter::run() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return work_ || stopping_; });
      work_ = false;
    }
    // Flush until nothing is pending: what arrives during one fdatasync is the next batch. A
    // flush of nothing releases the segments the log put off releasing (an idle log).
    while (wal_.has_pending() || wal_.reclaim_due()) {
      auto flushed = wal_.flush();
      if (!flushed) {
        if (flushed.error().code == Errc::no_space && !wal_.failed()) {
          if (on_no_space_) on_no_space_();
          std::unique_lock lock(mutex_);
          if (wake_.wait_for(lock, retry_interval, [this] { return stopping_; })) return;
          continue;
        }
        if (on_failure_) on_failure_(flushed.error());
        return;
      }
      {
        std::lock_guard lock(mutex_);
        ++batches_written_;
        bytes_written_ += flushed->bytes_written;
      }
      if (on_durable_ && flushed->batch_sequence != 0) on_durable_(*flushed);
    }
    std::lock_guard lock(mutex_);
    if (stopping_ && !work_) return;
  }
}

}  // namespace hamq::storage
