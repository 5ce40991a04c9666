#!/usr/bin/env bash
# Installs the Debian 12 packages hamq needs. Usage: scripts/install-deps.sh [build|test]
#   build: what building and running hamq-server needs
#   test:  that, plus the compilers, clients and tools the test suite uses (the default)
# Runs apt-get only when a package is missing. Needs root (or sudo).
set -euo pipefail

BUILD_PACKAGES=(
  cmake ninja-build g++
  libasio-dev libspdlog-dev libfmt-dev libcli11-dev
)
TEST_PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  libgtest-dev librabbitmq-dev
  clang-14 libclang-rt-14-dev clang-format-14
  python3 python3-pika python3-pytest python3-kombu
  default-jdk-headless librabbitmq-client-java
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
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi
echo "Installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
