#!/usr/bin/env bash
# Writes the seed corpus of fuzz/queue_command_fuzzer: one encoded command of each kind, from the
# real encoder. The seeds are checked in; rerun after a change to the command format. Needs a
# build with tests:  tools/make_queue_command_corpus.sh [BUILD_DIR]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
HAMQ_WRITE_QUEUE_COMMAND_CORPUS="$PWD/fuzz/corpus/queue_command_fuzzer" \
  "$build/bin/queue_test" --gtest_filter='QueueCommand.FuzzSeeds*'
ls -l fuzz/corpus/queue_command_fuzzer
