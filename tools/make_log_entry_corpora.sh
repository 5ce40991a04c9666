#!/usr/bin/env bash
# Writes the seed corpora of the log-entry fuzzers, one encoded command of each kind from the real
# encoders: fuzz/corpus/queue_command_fuzzer (queue commands), fuzz/corpus/queue_snapshot_fuzzer
# (queue snapshots) and
# fuzz/corpus/metadata_command_fuzzer (metadata commands). The seeds are checked in; rerun after a
# change to either format. Needs a build with tests:
#   tools/make_log_entry_corpora.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
HAMQ_WRITE_QUEUE_COMMAND_CORPUS="$PWD/fuzz/corpus/queue_command_fuzzer" \
  "$build/bin/queue_test" --gtest_filter='QueueCommand.FuzzSeeds*'
HAMQ_WRITE_QUEUE_SNAPSHOT_CORPUS="$PWD/fuzz/corpus/queue_snapshot_fuzzer" \
  "$build/bin/queue_test" --gtest_filter='QueueSnapshot.FuzzSeeds*'
HAMQ_WRITE_METADATA_COMMAND_CORPUS="$PWD/fuzz/corpus/metadata_command_fuzzer" \
  "$build/bin/broker_test" --gtest_filter='Definitions.FuzzSeeds*'
HAMQ_WRITE_LINK_FRAME_CORPUS="$PWD/fuzz/corpus/link_frame_fuzzer" \
  "$build/bin/cluster_test" --gtest_filter='LinkCodec.*FuzzSeeds*'
ls -l fuzz/corpus/queue_command_fuzzer fuzz/corpus/queue_snapshot_fuzzer \
  fuzz/corpus/metadata_command_fuzzer
