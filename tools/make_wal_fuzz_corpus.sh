#!/usr/bin/env bash
# Writes the seed corpus of fuzz/wal_record_fuzzer (fuzz/corpus/wal_record_fuzzer/) with the real
# write-ahead log: segments it writes, and damaged copies of them. The seeds are checked in; rerun
# this only to change them (after a format change). Needs a build with tests:
#   tools/make_wal_fuzz_corpus.sh [BUILD_DIR]     (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
HAMQ_WRITE_WAL_CORPUS="$PWD/fuzz/corpus/wal_record_fuzzer" \
  "$build/bin/storage_test" --gtest_filter='WalFuzzCorpus.*'
ls -l fuzz/corpus/wal_record_fuzzer
