#!/usr/bin/env bash
# Fails when a source includes a layer it may not depend on (docs/ARCHITECTURE.md, "Layers"), or
# when a pure layer's code (tests and tool mains aside) includes what does I/O, reads a clock or
# starts a thread.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A allowed=(
  [common]="common"
  [amqp]="common amqp"
  [queue]="common amqp queue"
  [raft]="common raft"
  [storage]="common storage"
  [replication]="common raft storage replication"
  [cluster]="common amqp raft cluster"
  [broker]="common amqp queue broker"
  [server]="common amqp queue raft storage replication cluster broker server"
  [perf]="common amqp perf"
)
pure="common amqp queue raft cluster broker"
impure='<(thread|mutex|condition_variable|chrono|fstream|filesystem|asio\.hpp|unistd\.h|fcntl\.h|sys/[a-z_]+\.h|spdlog/[a-z_/]+\.h)>'

status=0
for layer in "${!allowed[@]}"; do
  while IFS=: read -r file included; do
    dependency="${included#*\"}"
    dependency="${dependency%%/*}"
    if [[ " ${allowed[$layer]} " != *" $dependency "* ]]; then
      echo "$file: src/$layer may not include $dependency/"
      status=1
    fi
  done < <(grep -rHoE '#include "[a-z_]+/' "src/$layer" --include='*.h' --include='*.cc' || true)
done
for layer in $pure; do
  while IFS= read -r hit; do
    echo "$hit: a pure layer does no I/O, reads no clock and starts no thread"
    status=1
  done < <(grep -rHnE "#include $impure" "src/$layer" --include='*.h' --include='*.cc' |
           grep -vE '_test\.cc:|/main\.cc:' || true)
done
[ "$status" -eq 0 ] && echo "layers are respected"
exit "$status"
