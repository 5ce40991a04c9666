#!/usr/bin/env bash
# Installs the Debian 12 packages hamq needs. Usage: scripts/install-deps.sh [build|test]
#   build: what building and running hamq-server needs
#   test:  that, plus the compilers, clients and tools the test suite uses (the default)
# Runs apt-get only when a package is missing. Needs root (or sudo).
set -euo pipefail

BUILD_PACKAGES=(
  cmake ninja-build g++
  libasio-dev libspdlog-dev libfmt-dev libcli11-dev libssl-dev nlohmann-json3-dev libjemalloc-dev
)
TEST_PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  libgtest-dev librabbitmq-dev
  clang-14 libclang-rt-14-dev clang-format-14
  python3 python3-pika python3-pytest python3-kombu python3-aio-pika python3-aiormq
  default-jdk-headless librabbitmq-client-java
  iproute2 iptables util-linux pkg-config libfuse3-dev fuse3
)

case "${1:-test}" in
  build) packages=("${BUILD_PACKAGES[@]}") ;;
  test) packages=("${TEST_PACKAGES[@]}") ;;
  *) echo "usage: $0 [build|test]" >&2; exit 2 ;;
esac

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done
# amqplib's tests need Node.js and npm: Debian's, unless the machine has its own already.
if [ "${1:-test}" = test ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -q
  "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# amqplib, from the npm registry at the version package-lock.json pins.
if [ "${1:-test}" = test ]; then
  node_dir="$(dirname "$0")/../tests/clients/node"
  if ! (cd "$node_dir" && npm ls --depth=0 >/dev/null 2>&1); then
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
