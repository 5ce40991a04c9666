#!/usr/bin/env bash
# Installs what the tests need, builds hamq twice, and runs the whole test suite:
#   build/       Release with g++: unit tests, integration tests with real clients
#   build-asan/  clang-14 with AddressSanitizer, UndefinedBehaviorSanitizer and libFuzzer: the
#                same tests, plus a bounded run of every fuzzer (HAMQ_FUZZ_SECONDS each, 60 s)
# Ends with one line "N passed, M failed" over both; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test || exit 1

fuzz_seconds="${HAMQ_FUZZ_SECONDS:-60}"
jobs="$(nproc)"
status=0
passed=0
failed=0

run_suite() {  # build-dir, cmake args...
  local dir="$1"
  shift
  echo "=== ${dir}: configure and build"
  cmake -S . -B "$dir" -G Ninja "$@" >"$dir/configure.log" 2>&1 || {
    cat "$dir/configure.log"; status=1; failed=$((failed + 1)); return; }
  cmake --build "$dir" -j "$jobs" || { status=1; failed=$((failed + 1)); return; }
  echo "=== ${dir}: test"
  local log="$dir/ctest.log"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs" 2>&1 | tee "$log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  local summary
  summary=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -n 1)
  if [ -z "$summary" ]; then
    status=1
    failed=$((failed + 1))
    return
  fi
  local total bad
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$summary")
  bad=$(sed -E 's/.*tests passed, ([0-9]+) tests failed.*/\1/' <<<"$summary")
  passed=$((passed + total - bad))
  failed=$((failed + bad))
}

mkdir -p build build-asan
run_suite build -DCMAKE_BUILD_TYPE=Release -DHAMQ_TESTS=ON
run_suite build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHAMQ_TESTS=ON \
  -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14 \
  -DHAMQ_SANITIZE=ON -DHAMQ_FUZZ=ON -DHAMQ_FUZZ_SECONDS="$fuzz_seconds"

echo
echo "${passed} passed, ${failed} failed"
[ "$failed" -eq 0 ] || status=1
exit "$status"
