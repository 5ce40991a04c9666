#!/usr/bin/python3
"""Runs hamq-expiry-bench (messages with random per-message TTLs, dead-lettered when they expire)
against hamq and RabbitMQ in turn, and prints each one's summary: how late expired messages
arrive, the broker's CPU, and its memory.

Needs root (RabbitMQ runs as the rabbitmq user), Debian's rabbitmq-server, and a Release build.

  bench/expiry_compare.py [--messages 200000] [--rate 20000] [--min-ms 5000] [--max-ms 60000]
"""

import argparse
import subprocess
import sys

from compare import BIN, Hamq, RabbitMQ


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--rate", type=int, default=20000)
    parser.add_argument("--min-ms", type=int, default=5000)
    parser.add_argument("--max-ms", type=int, default=60000)
    args = parser.parse_args()
    for broker in (Hamq(), RabbitMQ()):
        broker.start()
        try:
            run = subprocess.run(
                [str(BIN / "hamq-expiry-bench"), "--port", str(broker.port), "--server-pid",
                 str(broker.pid), "--messages", str(args.messages), "--rate", str(args.rate),
                 "--min-ms", str(args.min_ms), "--max-ms", str(args.max_ms)],
                capture_output=True, text=True, timeout=args.max_ms / 1000 * 4 + 600)
            summary = [line for line in run.stdout.splitlines() if line.startswith("summary")]
            print(f"{broker.name}: {summary[0] if summary else run.stdout + run.stderr}")
            sys.stdout.flush()
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
