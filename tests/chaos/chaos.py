#!/usr/bin/python3
"""A Jepsen-style fault harness: real hamq-server nodes, real clients, real faults.

It starts a cluster of N nodes (127.0.0.11, .12, ...) in the network namespace it runs in
(tests/in_netns.sh makes one), declares replicated durable queues, runs publishers (persistent
messages with unique ids, publisher confirms) and consumers (manual acks) with pika and with
rabbitmq-c (tests/chaos/chaos_client.c), each on a node of its choosing and moving to another on
any failure, while a nemesis injects faults: SIGKILL and restart, SIGSTOP and SIGCONT, partitions
with iptables, packet loss, a full disk, a damaged log, power loss. Then it heals everything, restarts every node, drains every queue and
checks the history:

  lost          confirmed, never acknowledged by a consumer (an ack whose connection broke as it
                went may have been applied: that message is not counted lost)
  unexpected    delivered, never published
  duplicated    delivered again without the redelivered flag
  reordered     two messages of one publisher connection delivered to one consumer connection
                out of publish order, neither redelivered
  not_expired   confirmed into the TTL queue (chaos-ttl, which nobody consumes), and found there
                by the drain instead of expired into the dead-letter queue (unless it went in
                while the clock nemesis had moved a clock)
  early         published to the delayed exchange (chaos-delayed, into chaos-later) and delivered
                before its x-delay was up (unless a clock was moved meanwhile)
  availability  the longest stretch without a confirm, and the share of publishes nacked or never
                confirmed

Every run prints its seed and writes its history (history.jsonl: every publish, confirm, nack,
delivery, ack and fault, with the time in seconds since the start) and each node's log into its
run directory, which a failing run leaves behind. The seed fixes the faults, their targets and
timing, and each client's choice of nodes; real processes keep the rest from being replayed
exactly.

  tests/in_netns.sh /usr/bin/python3 tests/chaos/chaos.py [--nodes 3] [--seconds 60]
      [--nemesis kill,pause,partition] [--seed N] [--dir DIR] [--keep]

The nemeses (--nemesis, comma-separated, or "all"):
  kill            SIGKILL a random node, restart it after a while
  kill-leader     the same to the node leading one of the queues
  kill-minority   SIGKILL a minority of the nodes at once
  kill-all        SIGKILL every node, restart them all
  pause           SIGSTOP a random node, SIGCONT after a while
  pause-leader    the same to a queue's leader
  partition       isolate one node from the others (both ways)
  partition-halves  split the nodes into a majority and a minority
  partition-ring  (5 nodes) each node reaches only its two neighbours: overlapping majorities
  one-way         drop what one node sends to the others, not what it receives
  loss            drop 20% of the packets between nodes
  slow            cap one node's links (both ways), or every link, at 256 kbit/s to 4 Mbit/s: what
                  exceeds it queues, then drops (htb on lo; tc netem is not in this kernel)
  disk-full       fill the disk of a random node (each node's data is on a tmpfs of its own)
  power-loss      SIGKILL a random node and drop every write its disk has not synced, restart it
                  after a while (each node's data is on chaos_fs, tests/chaos/chaos_fs.cc, a
                  filesystem that keeps unsynced writes in its own memory: killing it drops them)
  power-loss-all  the same to every node at once
  clock           move a random node's wall clock (not its monotonic clock) by seconds to a day,
                  forward or back, or strobe it (back and forth every 50 ms), and set it right at
                  the end (each node runs with tests/chaos/clock_shift.c preloaded)
  corrupt         SIGKILL a random node, change a byte in the body of one record of a replicated
                  group's log on its disk (a queue's or the metadata's; in synced data: not the
                  log's last batches, which a torn write may cut), restart it after a while: it
                  must rebuild that member from the others, and never lead or vote with what it
                  lost
"""

import argparse
import collections
import json
import math
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

import pika

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("HAMQ_BIN_DIR", REPO / "build" / "bin"))
CLIENT_PORT = 5672
CLUSTER_PORT = 25672
MANAGEMENT_PORT = 15672
DEAD = "chaos-dead"  # the dead-letter queue of the two below
REJECT = "chaos-reject"  # its consumer rejects every message (requeue false)
EXPIRE = "chaos-ttl"  # its messages expire after 300 ms, unconsumed
DELAYED = "chaos-delayed"  # a durable x-delayed-message exchange, routing (direct) into LATER
LATER = "chaos-later"
DELAYS_MS = (200, 2000)  # each delayed message's x-delay is drawn from this range
ANOMALIES = ("lost", "unexpected", "duplicated", "reordered", "not_expired", "early")
DEAD_LETTERING = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": DEAD}
NEMESES = ("kill", "kill-leader", "kill-minority", "kill-all", "pause", "pause-leader",
           "partition", "partition-halves", "partition-ring", "one-way", "loss", "disk-full",
           "corrupt", "power-loss", "power-loss-all", "clock", "slow")
DISK_BYTES = 512 << 20  # each node's tmpfs, with the disk-full nemesis


def address(i):
    return "127.0.0.1%d" % i


def wal_records(wal_dir):
    """The segments of a node's log (in order) and its records, as hamq-dump lists them: (segment,
    batch number in the segment, offset in the file, type, group, body bytes)."""
    listed = subprocess.run([str(BIN_DIR / "hamq-dump"), str(wal_dir)], capture_output=True,
                            text=True, timeout=120, check=False)
    segments, records = [], []
    batch = -1
    for line in listed.stdout.splitlines():
        if line.startswith("segment "):
            segments.append(line.split()[1])
            batch = -1
        elif line.startswith(" batch @"):
            batch += 1
        elif line.startswith("  record @") and segments:
            fields = line.split()
            records.append((segments[-1], batch, int(fields[1][1:]), fields[2],
                            int(fields[3].split("=")[1]), int(fields[4].split("=")[1])))
    return segments, records


RECORD_HEADER_BYTES = 24  # docs/formats/wal.md, "Record"
DAMAGED = re.compile(r"group (\d+)(?: of the write-ahead log is damaged|: a record of its log on "
                     r"this node is damaged)")
REBUILT = re.compile(r"group (\d+): its damaged log here is dropped")


def unrebuilt(log_text):
    """The groups a node's log says it found damaged and did not rebuild after (the last word
    on each: a later start may find it again)."""
    last = {}
    for line in log_text.splitlines():
        for pattern, state in ((DAMAGED, "damaged"), (REBUILT, "rebuilt")):
            match = pattern.search(line)
            if match:
                last[int(match.group(1))] = state
    return sorted(group for group, state in last.items() if state == "damaged")


def damage_log(wal_dir, other_wal_dirs, rng):
    """Changes the last byte of the body of one entry or snapshot record of a group that other
    nodes hold too (a replicated queue's, or the metadata's), outside the last two batches of the
    log; returns what it damaged, or None if no record qualifies."""
    segments, records = wal_records(wal_dir)
    if not segments:
        return None
    replicated = set()
    for other in other_wal_dirs:
        replicated |= {record[4] for record in wal_records(other)[1]}
    last_batch = max((r[1] for r in records if r[0] == segments[-1]), default=0)
    candidates = [r for r in records
                  if r[3] in ("entry", "snapshot") and r[4] >= 1 and r[4] in replicated and r[5] > 0
                  and not (r[0] == segments[-1] and r[1] >= last_batch - 1)]
    if not candidates:
        return None
    segment, _, offset, kind, group, body = rng.choice(candidates)
    at = offset + RECORD_HEADER_BYTES + body - 1
    with open(wal_dir / segment, "r+b") as out:
        out.seek(at)
        byte = out.read(1)
        out.seek(at)
        out.write(bytes([byte[0] ^ 0x55]))
        out.flush()
        os.fsync(out.fileno())
    return {"segment": segment, "offset": at, "type": kind, "group": group}


class History:
    """The run's events, one JSON object per line, each with its time since the start."""

    def __init__(self, path):
        self.start = time.monotonic()
        self.out = open(path, "w", buffering=1)
        self.lock = threading.Lock()
        self.events = []

    def now(self):
        return time.monotonic() - self.start

    def add(self, client, op, t=None, **fields):
        event = {"t": round(self.now() if t is None else t - self.start, 6), "client": client,
                 "op": op, **fields}
        with self.lock:
            self.events.append(event)
            self.out.write(json.dumps(event) + "\n")
        return event

    def close(self):
        self.out.close()


class Node:
    """One hamq-server process; its output goes to DIR/nN.log, its data to DIR/nN. With
    `own_disk`, that is a tmpfs of its own; with `power`, a chaos_fs over DIR/nN.disk (which is
    the tmpfs, with both)."""

    def __init__(self, run_dir, i, seeds, secret, own_disk=False, power=False, clock=False):
        self.i = i
        self.data_dir = run_dir / ("n%d" % i)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.disk_dir = run_dir / ("n%d.disk" % i) if power else self.data_dir
        self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        if own_disk:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % DISK_BYTES, "tmpfs",
                            str(self.disk_dir)], check=True)
            self.mounted = True
        self.power = power
        self.fs = None  # the chaos_fs process, with `power`
        self.fs_log_path = run_dir / ("n%d.fs.log" % i)
        self.filler = self.data_dir / "filler"
        self.crashes = []  # exit statuses of its processes that ended without being killed
        self.log_path = run_dir / ("n%d.log" % i)
        self.args = [str(BIN_DIR / "hamq-server"), "--node-name", "n%d" % i, "--bind", address(i),
                     "--port", str(CLIENT_PORT), "--cluster-port", str(CLUSTER_PORT),
                     "--management-port", str(MANAGEMENT_PORT), "--data-dir", str(self.data_dir),
                     "--cluster-seeds", seeds, "--cluster-secret-file", str(secret),
                     "--heartbeat", "5"]
        self.env = None
        self.clock_path = None
        if clock:
            self.clock_path = run_dir / ("n%d.clock" % i)
            self.clock_path.write_bytes(struct.pack("=q", 0))
            self.env = dict(os.environ, LD_PRELOAD=str(BIN_DIR / "libclock_shift.so"),
                            HAMQ_CLOCK_SHIFT_FILE=str(self.clock_path))
        self.process = None
        self.paused = False
        self.lock = threading.RLock()  # two faults at once may both kill and restart it

    def start(self):
        """Starts it (its disk first, after a power loss), unless it runs already."""
        with self.lock:
            if self.alive():
                return
            self.exited()
            self.disk_ready()
            self._start()

    def disk_ready(self):
        """Mounts its chaos_fs again if a power loss took it (with the lock held)."""
        if self.power and (self.fs is None or self.fs.poll() is not None):
            self.mount_fs()

    def mount_fs(self):
        with open(self.fs_log_path, "a") as log:
            self.fs = subprocess.Popen([str(BIN_DIR / "chaos_fs"), str(self.disk_dir),
                                        str(self.data_dir)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.ismount(self.data_dir):
            if self.fs.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chaos_fs did not mount %s (see %s)"
                                   % (self.data_dir, self.fs_log_path))
            time.sleep(0.02)

    def power_off(self):
        """SIGKILL, and its disk loses every write it did not sync; returns how many bytes the
        files it appended to lost (what they held past their size on the backing disk). The node
        is stopped (SIGSTOP) while that is counted, and killed after its disk."""
        with self.lock:
            if self.fs is None or self.fs.poll() is not None:
                self.kill()
                return 0
            if self.alive():
                self.process.send_signal(signal.SIGSTOP)
            dropped = 0
            for path in self.data_dir.rglob("*"):
                if path == self.filler:
                    continue  # (the disk-full nemesis's, never synced)
                try:
                    on_disk = (self.disk_dir / path.relative_to(self.data_dir)).stat().st_size
                    dropped += max(0, path.stat().st_size - on_disk)
                except OSError:
                    pass  # (a file removed meanwhile)
            self.fs.kill()
            self.fs.wait()
            self.kill()
            subprocess.run(["umount", "-l", str(self.data_dir)], check=True)
            return dropped

    def _start(self):
        with open(self.log_path, "a") as log:
            log.write("==== start %s\n" % time.strftime("%H:%M:%S"))
            log.flush()
            self.process = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env)
        self.paused = False

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def exited(self):
        """True if its process ended without being killed (a crash): noted in `crashes`."""
        with self.lock:
            if self.process is None or self.alive() or getattr(self.process, "noted", False):
                return False
            self.process.noted = True
            self.crashes.append(self.process.returncode)
            return True

    def kill(self):
        with self.lock:
            if self.alive():
                self.process.kill()
                self.process.wait()
                self.process.noted = True  # killed, not crashed

    def fill_disk(self):
        """Writes a file until its disk is full (on chaos_fs, its unsynced bytes fill it)."""
        chunk = b"\0" * (1 << 20)
        with self.lock:
            self.disk_ready()
            with open(self.filler, "wb") as out:
                try:
                    while True:
                        out.write(chunk)
                        out.flush()
                except OSError:
                    pass

    def free_disk(self):
        with self.lock:
            self.disk_ready()
            self.filler.unlink(missing_ok=True)

    def unmount(self):
        """Unmounts its disks: a clean unmount of chaos_fs writes what it had not synced."""
        if self.fs is not None and self.fs.poll() is None:
            subprocess.run(["umount", str(self.data_dir)], check=False)
            try:
                self.fs.wait(30)
            except subprocess.TimeoutExpired:
                self.fs.kill()
                self.fs.wait()
                subprocess.run(["umount", "-l", str(self.data_dir)], check=False)
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.disk_dir)], check=False)
            self.mounted = False

    def shift_clock(self, seconds):
        """Sets its wall clock `seconds` away from the machine's (read by clock_shift.c at every
        clock_gettime, through its mapping of the file)."""
        if self.clock_path is not None:
            with open(self.clock_path, "r+b") as out:
                out.write(struct.pack("=q", int(seconds * 1e9)))

    def pause(self):
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.alive() and self.paused:
            self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def listening(self):
        try:
            socket.create_connection((address(self.i), CLIENT_PORT), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        """SIGTERM, then SIGKILL if it does not exit in 15 s; its exit status."""
        if not self.alive():
            return self.process.returncode if self.process else 0
        self.resume()
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return "ignored SIGTERM"


class Cluster:
    def __init__(self, run_dir, size, own_disks=False, power=False, clocks=False):
        if os.environ.get("HAMQ_NETNS") != "1":
            sys.exit("chaos.py runs in a network namespace of its own: "
                     "tests/in_netns.sh /usr/bin/python3 tests/chaos/chaos.py ...")
        self.size = size
        secret = run_dir / "secret"
        secret.write_text("chaos-secret\n")
        seeds = ",".join("n%d@%s:%d" % (i, address(i), CLUSTER_PORT) for i in range(1, size + 1))
        self.nodes = {}
        try:
            for i in range(1, size + 1):
                self.nodes[i] = Node(run_dir, i, seeds, secret, own_disks, power, clocks)
        except Exception:
            self.unmount()
            raise
        self.netem = []  # iptables rules in force, each as its argument list
        self.shaping = False  # an htb qdisc on lo, for the slow nemesis
        self.classes = 0

    def start(self):
        for node in self.nodes.values():
            node.start()
        self.wait(lambda: all(node.listening() for node in self.nodes.values()), 30,
                  "every node listening")

    @staticmethod
    def wait(condition, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except Exception as error:  # noqa: BLE001 (not ready yet)
                last = error
            time.sleep(0.1)
        raise TimeoutError("%s did not happen in %d s (last error: %r)" % (what, timeout_s, last))

    def hamqctl(self, i, *args, timeout_s=5):
        done = subprocess.run([str(BIN_DIR / "hamqctl"), "-n", "%s:%d" % (address(i), MANAGEMENT_PORT),
                               *args], capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise RuntimeError("hamqctl %s on n%d: %s" % (" ".join(args), i, done.stderr.strip()))
        return done.stdout

    def queue_rows(self, i):
        return json.loads(self.hamqctl(i, "list_queues", "name", "leader", "members", "online",
                                       "messages", "--formatter", "json"))

    def leader_of(self, queue, rng):
        """The node leading `queue` as a running node sees it (None if none knows)."""
        for i in rng.sample(sorted(self.nodes), len(self.nodes)):
            node = self.nodes[i]
            if not node.alive() or node.paused:
                continue
            try:
                row = next(r for r in self.queue_rows(i) if r["name"] == queue)
            except Exception:  # noqa: BLE001 (this node does not answer: ask another)
                continue
            if row.get("leader"):
                return int(row["leader"][1:])
        return None

    def drop(self, src, dst, probability=None):
        """Drops packets from node src to node dst (one way)."""
        rule = ["INPUT", "-s", address(src), "-d", address(dst)]
        if probability is not None:
            rule += ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
        rule += ["-j", "DROP"]
        subprocess.run(["iptables", "-A", *rule], check=True)
        return rule

    def undrop(self, rule):
        subprocess.run(["iptables", "-D", *rule], check=True)

    def slow(self, links, rate_kbit):
        """Caps what each node src sends to node dst, for each (src, dst) in `links`, at rate_kbit
        together: an htb class on lo, its packets picked by iptables (CLASSIFY). What exceeds the
        rate waits in the class's queue, and is dropped when that is full: a congested link (tc
        netem, for a fixed latency, is not in this kernel). Returns what unslow() takes."""
        if not self.shaping:
            subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb",
                            "default", "1"], check=True, capture_output=True)
            subprocess.run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", "1:1",
                            "htb", "rate", "100gbit"], check=True, capture_output=True)
            self.shaping = True
        self.classes += 1
        class_id = "1:%x" % (0x10 + self.classes)
        subprocess.run(["tc", "class", "add", "dev", "lo", "parent", "1:", "classid", class_id,
                        "htb", "rate", "%dkbit" % rate_kbit, "ceil", "%dkbit" % rate_kbit],
                       check=True, capture_output=True)
        rules = [["POSTROUTING", "-s", address(src), "-d", address(dst), "-p", "tcp", "-j",
                  "CLASSIFY", "--set-class", class_id] for src, dst in links]
        for rule in rules:
            subprocess.run(["iptables", "-t", "mangle", "-A", *rule], check=True)
        return class_id, rules

    def unslow(self, shaped):
        class_id, rules = shaped
        for rule in rules:
            subprocess.run(["iptables", "-t", "mangle", "-D", *rule], check=True)
        subprocess.run(["tc", "class", "del", "dev", "lo", "classid", class_id], check=False,
                       capture_output=True)

    def heal_network(self):
        subprocess.run(["iptables", "-F", "INPUT"], check=True)
        subprocess.run(["iptables", "-t", "mangle", "-F", "POSTROUTING"], check=True)

    def heal(self):
        """Undoes every fault: the network whole, disks with room, every node running and not
        paused."""
        self.heal_network()
        for node in self.nodes.values():
            node.shift_clock(0)
            node.free_disk()
            if node.paused:
                node.resume()
            node.exited()
            if not node.alive():
                node.start()

    def unmount(self):
        for node in self.nodes.values():
            node.unmount()

    def stop(self):
        """Stops every node (by its pid); the nodes that did not exit cleanly."""
        unclean = {}
        for i, node in self.nodes.items():
            status = node.stop()
            if status not in (0, -signal.SIGKILL) and node.process is not None:
                unclean[i] = status
        return unclean


class Nemesis(threading.Thread):
    """Injects faults from `kinds` with pauses between: each fault lasts 2-6 s (a killed node is
    restarted at its end), then 2-5 s of calm. One time in three (given two kinds or more), two
    faults of different kinds at once."""

    def __init__(self, cluster, kinds, queues, history, rng, seconds):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.kinds = kinds
        self.queues = queues
        self.history = history
        self.rng = rng
        self.seconds = seconds
        self.stopping = threading.Event()
        self.error = None

    def run(self):
        try:
            deadline = time.monotonic() + self.seconds
            self.stopping.wait(self.rng.uniform(2, 4))
            while not self.stopping.is_set() and time.monotonic() < deadline - 2:
                kinds = [self.rng.choice(self.kinds)]
                if len(self.kinds) > 1 and self.rng.random() < 1 / 3:
                    kinds.append(self.rng.choice([k for k in self.kinds if k != kinds[0]]))
                holds = [self.rng.uniform(2, 6) for _ in kinds]
                if len(kinds) == 1:
                    self.inject(kinds[0], holds[0])
                else:
                    # Targets are drawn here, in order, so that the seed fixes them.
                    both = [threading.Thread(target=self.inject, args=(kind, hold, random.Random(
                        self.rng.random()))) for kind, hold in zip(kinds, holds)]
                    for thread in both:
                        thread.start()
                    for thread in both:
                        thread.join()
                self.stopping.wait(self.rng.uniform(2, 5))
        except Exception as error:  # noqa: BLE001 (reported by the run)
            self.error = repr(error)
            self.history.add("nemesis", "error", error=self.error)

    def some(self, count, rng=None):
        return sorted((rng or self.rng).sample(sorted(self.cluster.nodes), count))

    def leader(self, rng):
        queue = rng.choice(self.queues)
        leader = self.cluster.leader_of(queue, rng)
        return [leader] if leader else self.some(1, rng)

    def inject(self, kind, hold, rng=None):
        rng = rng or self.rng
        nodes = self.cluster.nodes
        minority = (len(nodes) - 1) // 2
        if kind in ("kill", "kill-leader", "kill-minority", "kill-all"):
            targets = {"kill": lambda: self.some(1, rng), "kill-leader": lambda: self.leader(rng),
                       "kill-minority": lambda: self.some(minority, rng),
                       "kill-all": lambda: sorted(nodes)}[kind]()
            self.history.add("nemesis", "fault", kind=kind, nodes=targets)
            for i in targets:
                nodes[i].kill()
            self.stopping.wait(hold)
            for i in targets:
                nodes[i].start()
        elif kind in ("power-loss", "power-loss-all"):
            targets = self.some(1, rng) if kind == "power-loss" else sorted(nodes)
            self.history.add("nemesis", "fault", kind=kind, nodes=targets)
            dropped = {i: nodes[i].power_off() for i in targets}
            self.history.add("nemesis", "unsynced-dropped", kind=kind, bytes=dropped)
            self.stopping.wait(hold)
            for i in targets:
                nodes[i].start()
        elif kind == "slow":
            # One node's links both ways, or every link.
            links = self.links("partition" if rng.random() < 0.5 else "loss", rng)
            rate_kbit = rng.choice((256, 1024, 4096))
            self.history.add("nemesis", "fault", kind=kind, links=links, rate_kbit=rate_kbit)
            shaped = self.cluster.slow(links, rate_kbit)
            self.stopping.wait(hold)
            self.cluster.unslow(shaped)
        elif kind == "clock":
            target = self.some(1, rng)[0]
            shift_s = rng.choice((-1, 1)) * rng.choice((2, 30, 600, 86400)) * rng.uniform(1, 2)
            strobe = rng.random() < 1 / 3
            self.history.add("nemesis", "fault", kind=kind, nodes=[target], shift_s=shift_s,
                             strobe=strobe)
            if strobe:
                deadline = time.monotonic() + hold
                shifted = False
                while not self.stopping.is_set() and time.monotonic() < deadline:
                    shifted = not shifted
                    nodes[target].shift_clock(shift_s if shifted else 0)
                    self.stopping.wait(0.05)
            else:
                nodes[target].shift_clock(shift_s)
                self.stopping.wait(hold)
            nodes[target].shift_clock(0)
        elif kind == "corrupt":
            target = self.some(1, rng)[0]
            with nodes[target].lock:  # (not beside a power loss of that node)
                nodes[target].kill()
                nodes[target].disk_ready()
                damaged = damage_log(nodes[target].data_dir / "wal",
                                     [nodes[j].data_dir / "wal" for j in sorted(nodes)
                                      if j != target],
                                     random.Random(rng.random()))  # (one draw, whatever the log)
            self.history.add("nemesis", "fault", kind=kind, nodes=[target], damaged=damaged)
            self.stopping.wait(hold)
            nodes[target].start()
        elif kind == "disk-full":
            targets = self.some(1, rng)
            self.history.add("nemesis", "fault", kind=kind, nodes=targets)
            for i in targets:
                nodes[i].fill_disk()
            self.stopping.wait(hold)
            for i in targets:
                nodes[i].free_disk()
        elif kind in ("pause", "pause-leader"):
            targets = self.leader(rng) if kind == "pause-leader" else self.some(1, rng)
            self.history.add("nemesis", "fault", kind=kind, nodes=targets)
            for i in targets:
                nodes[i].pause()
            self.stopping.wait(hold)
            for i in targets:
                nodes[i].resume()
        else:
            links = self.links(kind, rng)
            self.history.add("nemesis", "fault", kind=kind, links=links)
            rules = [self.cluster.drop(src, dst, 0.2 if kind == "loss" else None)
                     for src, dst in links]
            self.stopping.wait(hold)
            for rule in rules:
                self.cluster.undrop(rule)
        self.history.add("nemesis", "heal", kind=kind)

    def links(self, kind, rng):
        """The (from, to) pairs of nodes whose packets the fault drops."""
        all_nodes = sorted(self.cluster.nodes)
        if kind == "partition":
            alone = self.some(1, rng)[0]
            return [(a, b) for a in all_nodes for b in all_nodes
                    if a != b and (a == alone) != (b == alone)]
        if kind == "partition-halves":
            minority = self.some((len(all_nodes) - 1) // 2 or 1, rng)
            return [(a, b) for a in all_nodes for b in all_nodes
                    if a != b and (a in minority) != (b in minority)]
        if kind == "partition-ring":
            order = rng.sample(all_nodes, len(all_nodes))
            near = {(order[k], order[(k + d) % len(order)]) for k in range(len(order))
                    for d in (-1, 1)}
            return [(a, b) for a in all_nodes for b in all_nodes if a != b and (a, b) not in near]
        if kind == "one-way":
            sender = self.some(1, rng)[0]
            return [(sender, b) for b in all_nodes if b != sender]
        if kind == "loss":
            return [(a, b) for a in all_nodes for b in all_nodes if a != b]
        raise ValueError("unknown nemesis " + kind)


def connect(i, timeout_s=3):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=address(i), port=CLIENT_PORT, connection_attempts=1, socket_timeout=timeout_s,
        stack_timeout=timeout_s * 2, heartbeat=2, blocked_connection_timeout=10))


class PikaClient(threading.Thread):
    """A client that connects to a node it picks, runs until an error, and moves to another."""

    def __init__(self, name, nodes, queues, history, rng):
        super().__init__(daemon=True)
        self.name = name
        self.nodes = nodes
        self.queues = queues
        self.history = history
        self.rng = rng
        self.stopping = threading.Event()
        self.connection = None
        self.busy_since = None  # when the operation in progress started (a watchdog's concern)
        self.session = 0

    def run(self):
        while not self.stopping.is_set():
            node = self.rng.choice(self.nodes)
            self.session += 1
            try:
                self.connection = connect(node)
                self.history.add(self.name, "connect", node=node, session=self.session)
                self.serve(node)
            except Exception as error:  # noqa: BLE001 (any failure: move to another node)
                self.history.add(self.name, "disconnect", node=node, session=self.session,
                                 error=type(error).__name__)
                self.stopping.wait(self.rng.uniform(0.05, 0.3))
            finally:
                self.busy_since = None
                self.close()
        self.close()

    def close(self):
        connection, self.connection = self.connection, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 (already broken)
                pass

    def abort(self):
        """Breaks the connection under a client stuck in one operation (a client-side timeout):
        what it waited for stays undetermined."""
        connection = self.connection
        try:
            connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)
        except Exception:  # noqa: BLE001 (already gone)
            pass


class PikaPublisher(PikaClient):
    """Publishes persistent messages one at a time with confirms; each id once (a publish whose
    confirm never came is not sent again)."""

    def serve(self, node):
        channel = self.connection.channel()
        channel.confirm_delivery()
        seq = 0
        while not self.stopping.is_set():
            queue = self.rng.choice(self.queues)
            message = "%s.%d.%d" % (self.name, self.session, seq)
            seq += 1
            exchange, routing_key, delay = "", queue, None
            if queue == DELAYED:
                exchange, routing_key, delay = DELAYED, LATER, self.rng.randint(*DELAYS_MS)
            self.history.add(self.name, "publish", id=message, queue=queue, node=node,
                             **({"delay_ms": delay} if delay else {}))
            self.busy_since = time.monotonic()
            try:
                channel.basic_publish(exchange, routing_key, message.encode(),
                                      pika.BasicProperties(
                                          delivery_mode=2, message_id=message,
                                          headers={"x-delay": delay} if delay else None),
                                      mandatory=True)
            except pika.exceptions.NackError:
                self.history.add(self.name, "nack", id=message)
                continue
            except pika.exceptions.UnroutableError:
                self.history.add(self.name, "unroutable", id=message)
                continue
            finally:
                self.busy_since = None
            self.history.add(self.name, "confirm", id=message)


class PikaConsumer(PikaClient):
    """Consumes one queue with manual acks (prefetch 20): acks each message, but gives one in 50
    back (basic.nack, requeue), to come again redelivered."""

    def serve(self, node):
        channel = self.connection.channel()
        channel.basic_qos(prefetch_count=20)
        queue = self.queues[int(self.name.rsplit("c", 1)[1]) % len(self.queues)]
        for method, _, body in channel.consume(queue, inactivity_timeout=0.5):
            if self.stopping.is_set():
                break
            if method is None:
                continue
            self.history.add(self.name, "deliver", id=body.decode(), queue=queue, node=node,
                             session=self.session, redelivered=method.redelivered)
            if self.rng.random() < 0.02:
                channel.basic_nack(method.delivery_tag, requeue=True)
                self.history.add(self.name, "requeue", id=body.decode())
            elif queue == REJECT:
                channel.basic_reject(method.delivery_tag, requeue=False)
                self.history.add(self.name, "reject", id=body.decode())
            else:
                try:
                    channel.basic_ack(method.delivery_tag)
                except Exception:
                    # The connection broke as the ack went: it may have reached the broker (and
                    # been applied) or not. Either is right; the check allows both.
                    self.history.add(self.name, "ack-unknown", id=body.decode())
                    raise
                self.history.add(self.name, "ack", id=body.decode())
        if not self.stopping.is_set():
            raise RuntimeError("the consumer was cancelled")


class CClient(threading.Thread):
    """tests/chaos/chaos_client (rabbitmq-c) as a publisher or a consumer: it prints its events,
    each with its CLOCK_MONOTONIC time, the clock Python's time.monotonic() reads."""

    def __init__(self, name, role, nodes, queues, history, seed):
        super().__init__(daemon=True)
        self.name = name
        self.history = history
        self.args = [str(BIN_DIR / "chaos_client"), role, "--name", name, "--seed", str(seed),
                     "--nodes", ",".join(address(i) for i in nodes), "--port", str(CLIENT_PORT),
                     "--queues", ",".join(queues)]
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                                        text=True)
        self.busy_since = None
        self.stderr = ""

    def run(self):
        for line in self.process.stdout:
            event = json.loads(line)
            t = event.pop("t")
            op = event.pop("op")
            self.history.add(self.name, op, t=t, **event)

    def stop(self):
        if self.process.poll() is None:
            self.process.stdin.close()  # its end of input is its signal to stop
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.join(10)

    def abort(self):
        pass


def watchdog(clients, stopping, timeout_s=8):
    """A publish waiting longer than timeout_s for its confirm: the client gives up on it (its
    connection broken, the publish undetermined) and goes to another node, as applications with
    a confirm timeout do."""
    while not stopping.wait(0.5):
        for client in clients:
            since = client.busy_since
            if since is not None and time.monotonic() - since > timeout_s:
                client.abort()


class Queues:
    """The queues of a run: `plain` ones; with dead-lettering, REJECT and EXPIRE, which
    dead-letter into DEAD; with delays, LATER, which the delayed exchange DELAYED routes into.
    Publishers send to `published` (the pika ones to DELAYED too, as if a queue), consumers take
    from `consumed`."""

    def __init__(self, count, dead_lettering, delayed):
        self.plain = ["chaos-%d" % q for q in range(count)]
        self.arguments = {name: {} for name in self.plain}
        self.published = list(self.plain)
        self.consumed = list(self.plain)
        if dead_lettering:
            self.arguments.update({REJECT: DEAD_LETTERING,
                                   EXPIRE: {**DEAD_LETTERING, "x-message-ttl": 300}, DEAD: {}})
            self.published += [REJECT, EXPIRE]
            self.consumed += [REJECT, DEAD]
        self.queues_published = list(self.published)
        self.delayed = delayed
        if delayed:
            self.arguments[LATER] = {}
            self.published.append(DELAYED)
            self.consumed.append(LATER)
        self.all = sorted(self.arguments)


def declare(cluster, queues):
    def declared():
        connection = connect(1)
        try:
            channel = connection.channel()
            for queue in queues.all:
                channel.queue_declare(queue, durable=True, arguments=queues.arguments[queue])
            if queues.delayed:
                channel.exchange_declare(DELAYED, "x-delayed-message", durable=True,
                                         arguments={"x-delayed-type": "direct"})
                channel.queue_bind(LATER, DELAYED, routing_key=LATER)
        finally:
            connection.close()
        return True
    cluster.wait(declared, 30, "the queues declared")
    settle(cluster, queues.all, 30)


def settle(cluster, queues, timeout_s):
    """Waits until every node lists every queue, and each of its members sees it with a leader
    and all its members online (a node holding no member knows no leader)."""
    def settled():
        for i in cluster.nodes:
            rows = {row["name"]: row for row in cluster.queue_rows(i)}
            for queue in queues:
                row = rows.get(queue)
                if not row:
                    return False
                if "n%d" % i in row["members"] and (
                        not row.get("leader") or sorted(row["online"]) != sorted(row["members"])):
                    return False
        return True
    cluster.wait(settled, timeout_s, "every queue led with every member online on every node")


def drain(cluster, queues, history, rng, timeout_s=60):
    """Takes (basic.get, acked) everything left in each queue, until every node counts it empty
    and every delayed message's time is 2 s past (its delayed exchange has routed it by then)."""
    due = max([e["t"] + e["delay_ms"] / 1000 for e in history.events
               if e["op"] == "publish" and "delay_ms" in e], default=0) + 2
    # (Those sent while the clock nemesis moved a clock may be due much later: not waited for.)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node = rng.choice(sorted(cluster.nodes))
        try:
            connection = connect(node)
            channel = connection.channel()
            for queue in queues:
                while True:
                    method, _, body = channel.basic_get(queue)
                    if method is None:
                        break
                    history.add("drain", "deliver", id=body.decode(), queue=queue, node=node,
                                session=0, redelivered=method.redelivered)
                    channel.basic_ack(method.delivery_tag)
                    history.add("drain", "ack", id=body.decode())
            connection.close()
        except Exception as error:  # noqa: BLE001 (try again, through another node)
            history.add("drain", "disconnect", node=node, error=type(error).__name__)
            time.sleep(0.2)
            continue
        try:
            counts = [row["messages"] for i in cluster.nodes for row in cluster.queue_rows(i)
                      if row["name"] in queues and "n%d" % i in row["members"]]
        except Exception:  # noqa: BLE001
            continue
        if all(count == 0 for count in counts) and history.now() >= due:
            return True
        time.sleep(0.2)
    return False


def check(events, end_of_faults):
    """What the history shows: the counts and the anomalies (lists of ids)."""
    published = {}
    outcome = {}
    deliveries = collections.defaultdict(list)  # (id, queue): its deliveries from that queue
    acked = set()
    maybe_acked = set()  # the connection broke as the ack went
    confirms = collections.defaultdict(list)  # queue: the times of its confirms
    outcome_at = {}
    clock_faults = []  # (from, to): a node's wall clock was moved
    for event in events:
        op = event["op"]
        if op == "fault" and event.get("kind") == "clock":
            clock_faults.append([event["t"], math.inf])
        elif op == "heal" and event.get("kind") == "clock" and clock_faults:
            clock_faults[-1][1] = event["t"]
        elif op == "publish":
            published[event["id"]] = event
        elif op in ("confirm", "nack", "unroutable"):
            outcome[event["id"]] = op
            outcome_at[event["id"]] = event["t"]
            if op == "confirm" and event["id"] in published:
                confirms[published[event["id"]]["queue"]].append(event["t"])
        elif op == "deliver":
            deliveries[(event["id"], event["queue"])].append(event)
        elif op == "ack":
            acked.add(event["id"])
        elif op == "ack-unknown":
            maybe_acked.add(event["id"])
    confirmed = {m for m, result in outcome.items() if result == "confirm"}

    def in_clock_fault(start_t, end_t):
        return any(start_t <= to and end_t >= start for start, to in clock_faults)
    # A delayed message sent while a clock was moved is due as far ahead as the clock of the
    # leader that stamped it was (a day, perhaps): not waited for, nor counted lost if it has not
    # come by the end (held_by_clock).
    held = {m for m in confirmed - acked if "delay_ms" in published.get(m, {})
            and in_clock_fault(published[m]["t"], outcome_at[m])}
    lost = sorted(confirmed - acked - maybe_acked - held)
    unexpected = sorted({m for m, _ in deliveries if m not in published})
    duplicated = sorted("%s in %s" % key for key, seen in deliveries.items()
                        if any(not later["redelivered"] for later in seen[1:]))
    # A message to the TTL queue that nobody consumes expires and goes to the dead-letter queue:
    # the drain must not find it there, unless it went in while a clock was moved (its leader
    # may have stamped it days ahead).
    not_expired = sorted(
        m for m, queue in deliveries if queue == EXPIRE and m in confirmed
        and published[m]["queue"] == EXPIRE
        and not in_clock_fault(published[m]["t"], outcome_at[m]))
    # A delayed message comes no sooner than its delay after it was sent (the leader of the
    # delayed exchange's group stamps it later still), unless a clock was moved meanwhile.
    early = sorted(
        m for (m, queue), seen in deliveries.items() if m in published
        and "delay_ms" in published[m]
        and seen[0]["t"] < published[m]["t"] + published[m]["delay_ms"] / 1000 - 0.05
        and not in_clock_fault(published[m]["t"], seen[0]["t"]))
    # Per consumer connection, the first deliveries of each publisher connection's messages come
    # in the order they were published (from the queue they were published to: dead-lettering
    # from two queues into one mixes them).
    reordered = []
    last = {}
    for event in events:
        if event["op"] != "deliver" or event["redelivered"]:
            continue
        if event["id"] not in published or published[event["id"]]["queue"] != event["queue"]:
            continue
        client, session, seq = event["id"].rsplit(".", 2)
        key = (event["client"], event.get("session"), client, session)
        if key in last and int(seq) < last[key][0]:
            reordered.append("%s after %s" % (event["id"], last[key][1]))
        last[key] = (int(seq), event["id"])
    # Per queue, the longest time between two confirms of publishes to it while faults went on.
    longest = None
    for times in confirms.values():
        times = sorted(t for t in times if t <= end_of_faults)
        longest = max([longest or 0] + [b - a for a, b in zip(times, times[1:])])
    undetermined = sum(1 for m in published if m not in outcome)
    return {
        "published": len(published), "confirmed": len(confirmed),
        "nacked": sum(1 for r in outcome.values() if r == "nack"),
        "unroutable": sum(1 for r in outcome.values() if r == "unroutable"),
        "undetermined": undetermined, "delivered": sum(len(d) for d in deliveries.values()),
        "redelivered": sum(1 for d in deliveries.values() for e in d if e["redelivered"]),
        "ack_unknown": len(maybe_acked - acked), "held_by_clock": len(held),
        "lost": lost, "unexpected": unexpected, "duplicated": duplicated,
        "reordered": reordered, "not_expired": not_expired, "early": early,
        "longest_without_confirm_s": round(longest, 3) if longest is not None else None,
        "not_confirmed_share": round((len(published) - len(confirmed)) / len(published), 4)
        if published else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60, help="how long faults go on")
    parser.add_argument("--nemesis", default="kill,kill-leader,pause,partition",
                        help="comma-separated nemeses, or all")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--queues", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2, help="pika publishers")
    parser.add_argument("--consumers", type=int, default=None,
                        help="pika consumers (default: one per queue consumed)")
    parser.add_argument("--no-dead-lettering", action="store_true",
                        help="without the queues that dead-letter (rejected and expired)")
    parser.add_argument("--no-delayed", action="store_true",
                        help="without the delayed exchange (chaos-delayed into chaos-later)")
    parser.add_argument("--c-publishers", type=int, default=1, help="rabbitmq-c publishers")
    parser.add_argument("--c-consumers", type=int, default=1, help="rabbitmq-c consumers")
    parser.add_argument("--dir", default=None, help="run directory (default: a new one in /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory if it passes")
    args = parser.parse_args()

    kinds = list(NEMESES) if args.nemesis == "all" else args.nemesis.split(",")
    for kind in kinds:
        if kind not in NEMESES:
            parser.error("unknown nemesis %r (known: %s)" % (kind, ", ".join(NEMESES)))
    if args.nodes < 5:
        kinds = [k for k in kinds if k != "partition-ring"] or ["partition"]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    run_dir = pathlib.Path(args.dir or tempfile.mkdtemp(prefix="hamq-chaos-"))
    if run_dir.exists() and any(run_dir.iterdir()):
        # A run starts on empty nodes: an earlier one's (a failed run keeps its directory) goes.
        if not (run_dir / "history.jsonl").exists():
            parser.error("%s is not empty, and not an earlier run's directory" % run_dir)
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    print("chaos: seed %d, %d nodes, %s s of %s, run directory %s"
          % (seed, args.nodes, args.seconds, ",".join(kinds), run_dir), flush=True)
    rng = random.Random(seed)
    # A SIGTERM (ctest's timeout) still stops every node it started, in the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    history = History(run_dir / "history.jsonl")
    cluster = Cluster(run_dir, args.nodes, own_disks="disk-full" in kinds,
                      power=any(kind.startswith("power-loss") for kind in kinds),
                      clocks="clock" in kinds)
    queues = Queues(args.queues, not args.no_dead_lettering, not args.no_delayed)
    clients = []
    report = None
    failure = None
    try:
        cluster.start()
        declare(cluster, queues)
        nodes = sorted(cluster.nodes)
        for k in range(len(queues.consumed) if args.consumers is None else args.consumers):
            clients.append(PikaConsumer("c%d" % k, nodes, queues.consumed, history,
                                        random.Random(rng.random())))
        for k in range(args.publishers):
            clients.append(PikaPublisher("p%d" % k, nodes, queues.published, history,
                                         random.Random(rng.random())))
        for client in clients:
            client.start()
        c_clients = []
        for k in range(args.c_consumers):
            c_clients.append(CClient("cc%d" % k, "consume", nodes,
                                     [queues.plain[k % len(queues.plain)]], history,
                                     rng.randrange(2**31)))
        for k in range(args.c_publishers):
            c_clients.append(CClient("cp%d" % k, "publish", nodes, queues.queues_published, history,
                                     rng.randrange(2**31)))
        for client in c_clients:
            client.start()
        watching = threading.Event()
        threading.Thread(target=watchdog, args=(clients, watching), daemon=True).start()

        nemesis = Nemesis(cluster, kinds, queues.all, history, random.Random(rng.random()),
                          args.seconds)
        nemesis.start()
        nemesis.join(args.seconds + 60)
        end_of_faults = history.now()
        if nemesis.is_alive() or nemesis.error:
            failure = "the nemesis failed: %s" % (nemesis.error or "stuck")

        history.add("nemesis", "heal-all")
        cluster.heal()
        cluster.wait(lambda: all(n.listening() for n in cluster.nodes.values()), 30,
                     "every node listening again")
        publishers = [c for c in clients if isinstance(c, PikaPublisher)]
        consumers = [c for c in clients if isinstance(c, PikaConsumer)]
        for client in publishers:
            client.stopping.set()
        for client in c_clients:
            if client.args[1] == "publish":
                client.stop()
        for client in publishers:
            client.join(30)
        settle(cluster, queues.all, 60)
        # The consumers take what is left (as long as 30 s), then stop; what they held comes
        # back to the drain.
        try:
            cluster.wait(lambda: all(row["messages"] == 0 for i in cluster.nodes
                                     for row in cluster.queue_rows(i)
                                     if row["name"] in queues.all and "n%d" % i in row["members"]),
                         30, "the consumers done")
        except TimeoutError:
            history.add("nemesis", "consumers-not-done")
        for client in consumers:
            client.stopping.set()
        for client in consumers:
            client.join(30)
        for client in c_clients:
            client.stop()
        watching.set()
        stuck = [c.name for c in clients if c.is_alive()]
        if stuck:
            failure = failure or "clients stuck: %s" % ", ".join(stuck)
        if not drain(cluster, queues.all, history, rng):
            failure = failure or "the queues did not drain"
        report = check(history.events, end_of_faults)
    except Exception as error:  # noqa: BLE001 (reported below; the cluster is still stopped)
        failure = "the run failed: %r" % error
    finally:
        for client in clients:
            client.stopping.set()
        unclean = cluster.stop()
        subprocess.run(["iptables", "-F", "INPUT"], check=False)
        crashed = {i: node.crashes for i, node in cluster.nodes.items() if node.crashes}
        anomalous = report and any(report[k] for k in ANOMALIES)
        for i, node in cluster.nodes.items():
            # A failing run keeps its nodes' data (a tmpfs goes with its mount).
            if node.mounted and (failure or anomalous or crashed):
                shutil.copytree(node.data_dir, run_dir / ("n%d-data" % i), dirs_exist_ok=True)
        cluster.unmount()
        history.close()
    if crashed:
        failure = failure or "nodes exited on their own: %s" % crashed
    # A replica found damaged (the corrupt nemesis) must have been rebuilt from the others.
    stuck_damaged = {i: unrebuilt(node.log_path.read_text(errors="replace"))
                     for i, node in cluster.nodes.items() if node.log_path.exists()}
    stuck_damaged = {i: groups for i, groups in stuck_damaged.items() if groups}
    if stuck_damaged:
        failure = failure or "damaged replicas not rebuilt: %s" % stuck_damaged
    if unclean:
        failure = failure or "nodes did not stop cleanly: %s" % unclean
    if report:
        anomalies = {k: report[k] for k in ANOMALIES}
        summary = {k: (len(v) if isinstance(v, list) else v) for k, v in report.items()}
        print("chaos: " + json.dumps(summary), flush=True)
        for kind, ids in anomalies.items():
            if ids:
                print("chaos: %s: %s" % (kind, " ".join(ids[:20])), flush=True)
                failure = failure or "anomalies found"
        (run_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if failure:
        print("chaos: FAILED (%s); seed %d; history and logs in %s" % (failure, seed, run_dir),
              flush=True)
        return 1
    print("chaos: passed, seed %d" % seed, flush=True)
    if not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
