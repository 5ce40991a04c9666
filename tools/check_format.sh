#!/usr/bin/env bash
# Fails when a C++ source (generated files aside) differs from what .clang-format makes of it.
set -euo pipefail
cd "$(dirname "$0")/.."
formatter="$(command -v clang-format-14 || command -v clang-format)"
git ls-files '*.cc' '*.h' | grep -v '\.gen\.' | xargs "$formatter" --dry-run -Werror
echo "formatting is clean"
