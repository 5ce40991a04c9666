#!/usr/bin/python3
"""What a queue declare costs as queues accumulate, with pika, on hamq and RabbitMQ side by side.

Declares --queues durable queues one after another (pika's BlockingConnection, as applications do)
and reports the mean milliseconds per declare of each block of --block queues; then, beside them,
the cost of a transient (exclusive) declare and of binding a queue; then restarts the broker and
reports how long until it answers a passive declare of the last queue, its RSS, and its CPU while
idle for --idle-seconds with every queue in place. Issue 14 asks that the last thousand cost what
the first thousand did, with 50,000 queues.

Needs root (RabbitMQ runs as the rabbitmq user), Debian's rabbitmq-server and python3-pika, and a
Release build (build/bin/hamq-server). RabbitMQ's queues are classic durable ones, what pika's
queue_declare(durable=True) makes there; hamq's are its replicated durable queues.

  bench/declare_cost.py [--queues 50000] [--block 1000] [--broker hamq --broker RabbitMQ]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import Hamq, RabbitMQ, machine, proc_cpu_seconds, proc_rss_kb  # noqa: E402

HAMQ_PORT = 5697


class RestartableHamq(Hamq):
    """compare.py's hamq-server, on a data directory kept across its restarts."""
    port = HAMQ_PORT

    def stop(self):
        self.process.terminate()
        self.process.wait(120)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class RestartableRabbitMQ(RabbitMQ):
    """compare.py's RabbitMQ, on a directory kept across its restarts."""

    def __init__(self):
        self.kept_dir = None

    def start(self):
        if self.kept_dir is None:
            super().start()
            self.kept_dir = self.dir
            return
        self.dir = self.kept_dir
        env = [f"{k}={v}" for k, v in self.env().items()]
        self.process = subprocess.Popen(["runuser", "-u", "rabbitmq", "--", "env", *env,
                                         "/usr/sbin/rabbitmq-server"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while True:
            try:
                # With 50,000 queues one await_startup can outlast ctl's own timeout.
                if self.ctl("await_startup").returncode == 0:
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("RabbitMQ did not restart")
            time.sleep(0.5)
        with open(f"{self.dir}/pid") as f:
            self.pid = int(f.read().strip())

    def stop(self):
        self.ctl("shutdown")
        self.process.wait(300)

    def remove(self):
        subprocess.run(["epmd", "-kill"], capture_output=True)
        shutil.rmtree(self.kept_dir, ignore_errors=True)


def connect(broker):
    return pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", broker.port, blocked_connection_timeout=600, heartbeat=0))


def timed_ms(action, count):
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return (time.perf_counter() - started) * 1000 / count


def measure(broker, queues, block, idle_seconds):
    result = {"broker": broker.name, "blocks": []}
    broker.start()
    connection = connect(broker)
    channel = connection.channel()
    for start in range(0, queues, block):
        count = min(block, queues - start)
        ms = timed_ms(lambda i: channel.queue_declare(f"q-{start + i:06d}", durable=True), count)
        result["blocks"].append({"from": start, "to": start + count, "ms_per_declare": ms})
        print(f"{broker.name}: queues {start}-{start + count}: {ms:.2f} ms per declare",
              file=sys.stderr, flush=True)
    result["transient_ms"] = timed_ms(
        lambda i: channel.queue_declare(f"t-{i}", exclusive=True), 200)
    result["bind_ms"] = timed_ms(
        lambda i: channel.queue_bind(f"q-{i:06d}", "amq.direct", f"k-{i}"), min(200, queues))
    connection.close()
    result["rss_mb"] = proc_rss_kb(broker.pid) / 1024

    broker.stop()
    started = time.monotonic()
    broker.start()
    while True:  # until the last queue answers
        try:
            connection = connect(broker)
            connection.channel().queue_declare(f"q-{queues - 1:06d}", passive=True)
            break
        except pika.exceptions.AMQPError:
            time.sleep(0.05)
    result["restart_s"] = time.monotonic() - started
    connection.close()
    cpu_before = proc_cpu_seconds(broker.pid)
    time.sleep(idle_seconds)  # idle: what the broker spends on its queues with no traffic
    result["idle_cpu_percent"] = (proc_cpu_seconds(broker.pid) - cpu_before) / idle_seconds * 100
    result["rss_after_restart_mb"] = proc_rss_kb(broker.pid) / 1024
    broker.stop()
    broker.remove()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=50_000)
    parser.add_argument("--block", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=int, default=10)
    parser.add_argument("--broker", action="append", choices=["hamq", "RabbitMQ"])
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    makers = {"hamq": RestartableHamq, "RabbitMQ": RestartableRabbitMQ}
    results = [measure(makers[name](), options.queues, options.block, options.idle_seconds)
               for name in options.broker or ["hamq", "RabbitMQ"]]
    print(f"Machine: {machine()}. {options.queues} durable queues declared with pika.")
    print()
    print("| broker | first block ms/declare | last block ms/declare | last/first | "
          "transient ms | bind ms | restart s | idle CPU % | RSS MB | RSS after restart MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        first, last = r["blocks"][0]["ms_per_declare"], r["blocks"][-1]["ms_per_declare"]
        print(f"| {r['broker']} | {first:.2f} | {last:.2f} | {last / first:.2f}x | "
              f"{r['transient_ms']:.2f} | {r['bind_ms']:.2f} | {r['restart_s']:.2f} | "
              f"{r['idle_cpu_percent']:.1f} | {r['rss_mb']:.0f} | "
              f"{r['rss_after_restart_mb']:.0f} |")
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
