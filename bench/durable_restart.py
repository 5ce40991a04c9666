#!/usr/bin/python3
"""Fills a durable queue with N messages of 1 KB (persistent, confirmed), records the broker's RSS,
kills it with SIGKILL, starts it again and times how long from the start until a client gets the
first message back; for hamq and RabbitMQ (a quorum queue) in one run.

Needs root, Debian's rabbitmq-server, python3-pika and a Release build, as bench/compare.py.

  bench/durable_restart.py [--messages 1000000] [--cold] [--markdown FILE]

--cold also drops the page cache before the restart (the log is read from the disk).
"""

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pika

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import compare  # noqa: E402

QUEUE = "restart-test"


class Hamq(compare.Hamq):
    def start(self):
        if not hasattr(self, "dir"):
            self.dir = tempfile.mkdtemp(prefix="hamq-bench-")
        self.process = subprocess.Popen(
            [str(compare.BIN / "hamq-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--data-dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid

    def kill(self):
        self.process.kill()
        self.process.wait()

    queue_args = []


class RabbitMQ(compare.RabbitMQ):
    def start(self):
        if not hasattr(self, "dir"):
            self.dir = tempfile.mkdtemp(prefix="rabbitmq-bench-")
            os.chown(self.dir, *[getattr(__import__("pwd").getpwnam("rabbitmq"), f)
                                 for f in ("pw_uid", "pw_gid")])
        for stale in ("pid",):
            pathlib.Path(self.dir, stale).unlink(missing_ok=True)
        self.process = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", "env",
             *[f"{k}={v}" for k, v in self.env().items()], "/usr/sbin/rabbitmq-server"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{self.dir}/pid"):
            if time.monotonic() > deadline:
                raise RuntimeError("RabbitMQ did not start")
            time.sleep(0.05)
        with open(f"{self.dir}/pid") as f:
            while True:
                text = f.read().strip()
                if text:
                    break
                time.sleep(0.05)
                f.seek(0)
        self.pid = int(text)

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.process.wait(60)
        subprocess.run(["epmd", "-kill"], capture_output=True)

    queue_args = ["--queue-args", "x-queue-type=quorum"]


def first_message_s(broker, started, timeout_s=300):
    """Seconds from `started` until basic.get returns a message."""
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        try:
            connection = pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", broker.port, connection_attempts=1, socket_timeout=1))
            method, _, _ = connection.channel().basic_get(QUEUE)
            connection.close()
            if method is not None:
                return time.monotonic() - started, method.message_count + 1
        except (pika.exceptions.AMQPError, OSError):
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{broker.name} served nothing within {timeout_s} s")


def wait_listening(port, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def measure(broker, messages, cold):
    broker.start()
    wait_listening(broker.port)
    if isinstance(broker, RabbitMQ):
        broker.ctl("await_startup")
    fill = subprocess.run(
        [str(compare.BIN / "hamq-perf"), "-h", f"amqp://guest:guest@127.0.0.1:{broker.port}/%2F",
         "-x1", "-y0", "-s1000", "-f", "persistent", "-c1000", "-C", str(messages), "-u", QUEUE,
         "--auto-delete", "false", *broker.queue_args], capture_output=True, text=True)
    if fill.returncode != 0:
        raise RuntimeError(f"filling {broker.name} failed: {fill.stderr}")
    time.sleep(2)
    rss_full = compare.proc_rss_kb(broker.pid) / 1024
    broker.kill()
    if cold:
        subprocess.run(["sync"])
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")
    started = time.monotonic()
    broker.start()
    seconds, count = first_message_s(broker, started)
    time.sleep(1)
    rss_restarted = compare.proc_rss_kb(broker.pid) / 1024
    broker.stop()
    return {"rss_full": rss_full, "restart_s": seconds, "count": count,
            "rss_restarted": rss_restarted}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--markdown")
    options = parser.parse_args()
    results = {}
    for broker in (Hamq(), RabbitMQ()):
        print(f"{broker.name} ...", file=sys.stderr, flush=True)
        results[broker.name] = measure(broker, options.messages, options.cold)
    lines = [f"Machine: {compare.machine()}. {options.messages:,} messages of 1 KB in one durable "
             f"queue (RabbitMQ: x-queue-type=quorum); page cache "
             f"{'dropped' if options.cold else 'warm'} before the restart.", "",
             "| broker | RSS holding them MB | first message after restart s | "
             "messages after restart | RSS after restart MB |", "|---|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rss_full']:.0f} | {r['restart_s']:.2f} | {r['count']:,} | "
                     f"{r['rss_restarted']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if options.markdown:
        with open(options.markdown, "a") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
