#!/usr/bin/python3
"""Runs the same hamq-perf scenarios against hamq and RabbitMQ on this machine, alternating, and
prints a table: end-to-end rate, consumer latency percentiles, broker CPU seconds per million
messages (from /proc), peak broker RSS, and the ratio hamq/RabbitMQ.

Needs root (RabbitMQ runs as the rabbitmq user), Debian's rabbitmq-server, and a Release build
(build/bin/hamq-server and build/bin/hamq-perf). Both brokers run with their defaults on ports of
their own (hamq 5698, RabbitMQ 5699) and are stopped at the end.

  bench/compare.py [--seconds 15] [--scenario NAME ...] [--markdown FILE]
"""

import argparse
import os
import pathlib
import platform
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import json

REPO = pathlib.Path(__file__).resolve().parents[1]
BIN = REPO / "build" / "bin"
HAMQ_PORT = 5698
RABBIT_PORT = 5699
RABBIT_NODE = "hamqbench@localhost"

# name -> (hamq-perf arguments, what it shows)
SCENARIOS = {
    "transient-16B": (["-x1", "-y1", "-s16", "-A100", "-q1000"],
                      "1 producer, 1 consumer, 16 B, no confirms, ack every 100, prefetch 1000"),
    "latency-10k": (["-x1", "-y1", "-s16", "-r10000", "-A100", "-q1000"],
                    "the same at a fixed 10,000 msg/s: latency"),
    "fanout-10": (["-x1", "-y10", "-s16", "-a"],
                  "1 producer to 10 queues (one per consumer), auto-ack"),
    "durable-1KB-classic": (["-x1", "-y1", "-s1000", "-f", "persistent", "-c1000", "-A100",
                             "-q1000", "-u", "durable-classic", "--auto-delete", "false"],
                            "durable queue, 1 KB persistent, confirms (1000 unconfirmed)"),
    "durable-1KB-quorum": (["-x1", "-y1", "-s1000", "-f", "persistent", "-c1000", "-A100",
                            "-q1000", "-u", "durable-quorum", "--auto-delete", "false",
                            "--queue-args", "x-queue-type=quorum"],
                           "the same with x-queue-type=quorum"),
    "durable-quorum-5k": (["-x1", "-y1", "-s1000", "-f", "persistent", "-c1000", "-r5000",
                           "-A100", "-q1000", "-u", "durable-quorum-5k", "--auto-delete", "false",
                           "--queue-args", "x-queue-type=quorum"],
                          "quorum queue at a steady 5,000 msg/s: confirm latency"),
    "100-queues": (["-x100", "-y100", "-s16", "-r200", "-A10", "-q100",
                    "--queue-pattern", "perf-%d", "--queue-pattern-from", "1",
                    "--queue-pattern-to", "100"],
                   "100 queues, 100 producers at 200 msg/s each, 100 consumers"),
}


def proc_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def children(pid):
    """Every descendant of pid."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid == pid:
            out.append(int(entry))
            out.extend(children(int(entry)))
    return out


class Hamq:
    name = "hamq"
    port = HAMQ_PORT

    def start(self):
        if not getattr(self, "dir", None):  # a restart keeps its data directory
            self.dir = tempfile.mkdtemp(prefix="hamq-bench-")
        self.process = subprocess.Popen(
            [str(BIN / "hamq-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--data-dir", self.dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in self.process.stdout:
            if "listening on" in line:
                break
        threading.Thread(target=lambda: self.process.stdout.read(), daemon=True).start()
        self.pid = self.process.pid

    def stop(self):
        self.process.terminate()
        self.process.wait(30)
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitMQ:
    name = "RabbitMQ"
    port = RABBIT_PORT

    def env(self):
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/rabbitmq",
                "RABBITMQ_NODENAME": RABBIT_NODE, "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": "25699", "RABBITMQ_MNESIA_BASE": f"{self.dir}/mnesia",
                "RABBITMQ_LOG_BASE": f"{self.dir}/log",
                "RABBITMQ_ENABLED_PLUGINS_FILE": f"{self.dir}/enabled_plugins",
                "RABBITMQ_PID_FILE": f"{self.dir}/pid"}

    def ctl(self, *args):
        return subprocess.run(["runuser", "-u", "rabbitmq", "--", "env", *[
            f"{k}={v}" for k, v in self.env().items()], "rabbitmqctl", "-n", RABBIT_NODE, *args],
            capture_output=True, text=True, timeout=120)

    def start(self):
        self.dir = tempfile.mkdtemp(prefix="rabbitmq-bench-")
        user = pwd.getpwnam("rabbitmq")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.process = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", "env", *[f"{k}={v}" for k, v in self.env().items()],
             "/usr/sbin/rabbitmq-server"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if os.path.exists(f"{self.dir}/pid") and self.ctl("await_startup").returncode == 0:
                break
            time.sleep(1)
        else:
            raise RuntimeError("RabbitMQ did not start")
        with open(f"{self.dir}/pid") as f:
            self.pid = int(f.read().strip())

    def stop(self):
        self.ctl("shutdown")
        self.process.wait(60)
        subprocess.run(["epmd", "-kill"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_scenario(broker, args, seconds):
    summary = pathlib.Path(tempfile.mktemp(suffix=".json"))
    peak = [proc_rss_kb(broker.pid)]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], proc_rss_kb(broker.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    cpu_before = proc_cpu_seconds(broker.pid)
    perf = subprocess.run(
        [str(BIN / "hamq-perf"), "-h", f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F",
         "-z", str(seconds), "--json", str(summary), *args],
        capture_output=True, text=True, timeout=seconds + 120)
    cpu = proc_cpu_seconds(broker.pid) - cpu_before
    done.set()
    sampler.join()
    if perf.returncode != 0:
        raise RuntimeError(f"hamq-perf failed against {broker.name}: {perf.stderr}")
    data = json.loads(summary.read_text())
    summary.unlink()
    received = max(data["received"], 1)
    return {"rate": data["receive_rate"], "sent_rate": data["send_rate"],
            "p50_us": data["consumer_latency_us"]["median"],
            "p99_us": data["consumer_latency_us"]["p99"],
            "confirm_p99_us": data["confirm_latency_us"]["p99"],
            "cpu_s_per_million": cpu / received * 1e6, "peak_rss_mb": peak[0] / 1024}


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rabbit = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "rabbitmq-server"],
                            capture_output=True, text=True).stdout
    return (f"{os.cpu_count()} cores ({cpu}), {memory_gb:.0f} GiB, {platform.system()} "
            f"{platform.release()}; RabbitMQ {rabbit} (Debian), hamq "
            f"{subprocess.run(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    parser.add_argument("--markdown", help="append the table to this file")
    options = parser.parse_args()
    names = options.scenario or list(SCENARIOS)
    brokers = [Hamq(), RabbitMQ()]
    results = {}
    for broker in brokers:
        broker.start()
    try:
        for name in names:
            args, _ = SCENARIOS[name]
            for broker in brokers:  # alternating, one scenario at a time
                print(f"{name}: {broker.name} ...", file=sys.stderr, flush=True)
                results[(name, broker.name)] = run_scenario(broker, args, options.seconds)
    finally:
        for broker in brokers:
            broker.stop()
    header = ("| scenario | broker | rate msg/s | p50 latency ms | p99 latency ms | "
              "p99 confirm ms | CPU s per 1M msg | peak RSS MB |")
    lines = [f"Machine: {machine()}. {options.seconds} s per run.", "", header,
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name in names:
        h, r = results[(name, "hamq")], results[(name, "RabbitMQ")]
        for broker, x in (("hamq", h), ("RabbitMQ", r)):
            confirm = f"{x['confirm_p99_us'] / 1000:.2f}" if x["confirm_p99_us"] else "-"
            lines.append(f"| {name} | {broker} | {x['rate']:,.0f} | {x['p50_us'] / 1000:.2f} | "
                         f"{x['p99_us'] / 1000:.2f} | {confirm} | "
                         f"{x['cpu_s_per_million']:.2f} | {x['peak_rss_mb']:.0f} |")
        lines.append(f"| {name} | hamq/RabbitMQ | {h['rate'] / r['rate']:.2f}x | "
                     f"{h['p50_us'] / max(r['p50_us'], 1):.2f}x | "
                     f"{h['p99_us'] / max(r['p99_us'], 1):.2f}x | "
                     f"{h['confirm_p99_us'] / max(r['confirm_p99_us'], 1):.2f}x | "
                     f"{h['cpu_s_per_million'] / max(r['cpu_s_per_million'], 1e-9):.2f}x | "
                     f"{h['peak_rss_mb'] / max(r['peak_rss_mb'], 1e-9):.2f}x |")
    table = "\n".join(lines)
    print(table)
    print()
    for name in names:
        print(f"- {name}: {SCENARIOS[name][1]}")
    if options.markdown:
        with open(options.markdown, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
