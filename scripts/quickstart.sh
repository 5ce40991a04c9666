#!/usr/bin/env bash
# Installs what hamq needs, builds it, and runs a single-node hamq-server in the foreground on
# port 5672 with its data in ./hamq-data. Extra arguments go to hamq-server (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DHAMQ_TESTS=OFF
cmake --build build --target hamq-server
exec build/bin/hamq-server "$@"
