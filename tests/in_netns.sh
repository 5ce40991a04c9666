#!/usr/bin/env bash
# Runs a command in a network and mount namespace of its own (unshare --net --mount), with only
# its loopback up: the nodes of a cluster test listen on 127.0.0.11, .12, ... and iptables rules
# inside cut the links between them, without touching the machine's network; what the test
# mounts (a tmpfs, the fault harness's chaos_fs) is seen nowhere else. The namespaces go when the
# command ends. Needs root (or CAP_SYS_ADMIN).
#   tests/in_netns.sh COMMAND [ARGS...]
set -euo pipefail
if [[ "${HAMQ_NETNS:-}" != 1 ]]; then
  export HAMQ_NETNS=1
  exec unshare --net --mount -- "$0" "$@"
fi
ip link set lo up
exec "$@"
