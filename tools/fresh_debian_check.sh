#!/usr/bin/env bash
# Checks the README's quick start on a bare Debian 12, as a new user would meet it: makes a
# minbase bookworm with debootstrap in DIR (or reuses one), clones this repository's HEAD into it,
# runs scripts/quickstart.sh until hamq-server answers an AMQP client on port 5672, stops it, and
# runs scripts/test.sh. Needs root, debootstrap and access to Debian's archive.
#   tools/fresh_debian_check.sh [DIR]     (default /tmp/hamq-debian12)
set -euo pipefail
root="${1:-/tmp/hamq-debian12}"
repo="$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

if [ ! -x "$root/usr/bin/apt-get" ]; then
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
fi
mkdir -p "$root/mnt/hamq-src"
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind -o ro "$repo" "$root/mnt/hamq-src"
cleanup() {
  umount "$root/mnt/hamq-src" "$root/dev" "$root/proc" 2>/dev/null || true
}
trap cleanup EXIT

chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -euo pipefail -c '
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends git ca-certificates
  rm -rf /root/hamq
  git clone -q /mnt/hamq-src /root/hamq
  cd /root/hamq

  echo "=== quick start: scripts/quickstart.sh"
  scripts/quickstart.sh > /root/quickstart.log 2>&1 &
  server=$!
  for _ in $(seq 1800); do
    grep -q "listening on" /root/quickstart.log && break
    kill -0 $server 2>/dev/null || { cat /root/quickstart.log; exit 1; }
    sleep 1
  done
  tail -n 3 /root/quickstart.log
  # An AMQP client says hello; connection.start (a method frame, type 1) must come back.
  exec 3<>/dev/tcp/127.0.0.1/5672
  printf "AMQP\x00\x00\x09\x01" >&3
  first=$(head -c 1 <&3 | od -An -tu1 | tr -d " ")
  exec 3>&-
  [ "$first" = 1 ] || { echo "no connection.start from hamq-server"; exit 1; }
  echo "hamq-server answered on 5672"
  kill -TERM $server
  wait $server

  echo "=== test suite: scripts/test.sh"
  scripts/test.sh
'
