#!/usr/bin/python3
"""Issue 15's cluster benchmarks: a replicated durable queue on three nodes of this host, hamq
and RabbitMQ 3.10's quorum queue side by side in one run.

P5a / P5b: a publisher (pika's SelectConnection: not hamq's code) connected to a node that does
not lead the queue publishes 1 KB persistent messages at 2,000 msg/s with confirms; after 3 s the
queue's leader is killed (SIGKILL, P5a) or paused (SIGSTOP, P5b), and publishing goes on for 7 s
more. The result is the longest pause between two confirms from the fault on (the longest in the
second before the fault is printed beside it, as the noise floor), with the nacks and what was
left unconfirmed. Each run declares a new queue; the killed node is restarted (the paused one
resumed) and the cluster waits for it before the next run. Medians of --runs runs.

P3: throughput of a replicated queue: 1 KB persistent, confirms with 1,000 in flight, one
publisher and one consumer (prefetch 1,000), both connected to the queue's leader, for --seconds;
measured with hamq-perf (PerfTest's options) and with pika (one process publishing with 1,000
in flight, one consuming), the median of --runs runs each.

Run as root inside a network namespace of its own (hamq's nodes are on 127.0.0.11-13, RabbitMQ's
on 127.0.0.1 ports 5681-5683, all inside it), with a Release build and Debian's rabbitmq-server:

  tests/in_netns.sh bench/cluster_failover.py [--runs 3] [--seconds 20] [--only p5|p3]
      [--brokers hamq,rabbitmq] [--markdown bench/RESULTS.md]
"""

import argparse
import datetime
import json
import os
import pathlib
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import pika

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))
import compare  # noqa: E402
from hamq_cluster import Cluster, address  # noqa: E402

BODY = b"x" * 1024
GOALS = {"kill": 0.050, "pause": 0.500}
LOGS = False  # --logs: print hamq's node logs around a run that misses its goal
RATE = 2000
BEFORE_S = 3.0
AFTER_S = 7.0


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception:  # noqa: BLE001 (a node still starting answers with errors)
            pass
        time.sleep(0.2)
    raise RuntimeError("timed out waiting for " + what)


class HamqCluster:
    name = "hamq"

    def start(self):
        self.cluster = Cluster(3)
        if LOGS:
            for node in self.cluster.nodes.values():
                node.args += ["--log-level", "debug"]
        self.cluster.start()
        self.down = None
        return self

    def stop(self):
        self.cluster.stop()

    def port(self, i):
        return 5672

    def host(self, i):
        return address(i)

    def pid(self, i):
        return self.cluster.nodes[i].process.pid

    def declare(self, queue, through):
        connection = self.cluster.connect(through)
        connection.channel().queue_declare(queue, durable=True)
        connection.close()

    def leader(self, queue):
        def agreed():
            leaders = set()
            for i in (1, 2, 3):
                rows = json.loads(self.cluster.hamqctl(i, "list_queues", "name", "leader",
                                                       "--formatter", "json"))
                leaders.add(next(r["leader"] for r in rows if r["name"] == queue))
            return len(leaders) == 1 and None not in leaders and leaders.pop()
        return int(wait_for(agreed, 30, "one leader of " + queue)[1:])

    def kill(self, i):
        self.cluster.nodes[i].kill()

    def pause(self, i):
        self.cluster.nodes[i].pause()

    def recover(self, i, fault):
        node = self.cluster.nodes[i]
        if fault == "pause":
            node.resume()
        else:
            node.start()
        # Back once every node lists every queue with a leader again; then the leaders spread
        # to the node that came back (NodeLog::rebalance_leaders): the next run starts once no
        # leader has moved for 5 s, so that it measures one fault, not a fault and a rebalance.
        wait_for(lambda: all(json.loads(self.cluster.hamqctl(j, "list_queues", "name", "leader",
                                                             "--formatter", "json"))
                             for j in (1, 2, 3)), 60, "node %d back" % i)
        seen = {"leaders": None, "since": time.monotonic()}

        def settled():
            rows = json.loads(self.cluster.hamqctl(1, "list_queues", "name", "leader",
                                                   "--formatter", "json"))
            leaders = sorted((r["name"], r["leader"]) for r in rows)
            if leaders != seen["leaders"]:
                seen["leaders"], seen["since"] = leaders, time.monotonic()
            return time.monotonic() - seen["since"] >= 5
        wait_for(settled, 120, "the leaders to settle")

    def messages(self, queue):
        rows = json.loads(self.cluster.hamqctl(1, "list_queues", "name", "messages",
                                               "--formatter", "json"))
        return next(r["messages"] for r in rows if r["name"] == queue)

    def log_marks(self):
        return {i: len(node.log) for i, node in self.cluster.nodes.items()}

    def print_logs(self, since=None, lines=80):
        for i, node in self.cluster.nodes.items():
            start = (since or {}).get(i, max(0, len(node.log) - lines))
            print("    --- n%d's log ---" % i)
            for line in node.log[start:start + lines]:
                print("    " + line)


class RabbitCluster:
    name = "RabbitMQ"

    def __init__(self):
        self.host_name = socket.gethostname()
        self.dirs = {}
        self.processes = {}

    def node(self, i):
        return "rabbit%d@%s" % (i, self.host_name)

    def env(self, i):
        d = self.dirs[i]
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/var/lib/rabbitmq",
                "RABBITMQ_NODENAME": self.node(i), "RABBITMQ_NODE_PORT": str(self.port(i)),
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_DIST_PORT": str(25680 + i), "RABBITMQ_MNESIA_BASE": f"{d}/mnesia",
                "RABBITMQ_LOG_BASE": f"{d}/log",
                "RABBITMQ_ENABLED_PLUGINS_FILE": f"{d}/enabled_plugins",
                "RABBITMQ_PID_FILE": f"{d}/pid"}

    def ctl(self, i, *args, check=True):
        done = subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", "env", *[f"{k}={v}" for k, v in self.env(i).items()],
             "rabbitmqctl", "-n", self.node(i), *args], capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            raise RuntimeError("rabbitmqctl %s: %s%s" % (args, done.stdout, done.stderr))
        return done.stdout

    def port(self, i):
        return 5680 + i

    def host(self, i):
        return "127.0.0.1"

    def start_node(self, i):
        pathlib.Path(self.dirs[i], "pid").unlink(missing_ok=True)
        self.processes[i] = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", "env",
             *[f"{k}={v}" for k, v in self.env(i).items()], "/usr/sbin/rabbitmq-server"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        def started():
            if not os.path.exists(f"{self.dirs[i]}/pid"):
                return False
            return subprocess.run(
                ["runuser", "-u", "rabbitmq", "--", "env",
                 *[f"{k}={v}" for k, v in self.env(i).items()], "rabbitmqctl", "-n", self.node(i),
                 "await_startup"], capture_output=True, timeout=120).returncode == 0
        wait_for(started, 180, "RabbitMQ node %d to start" % i)

    def start(self):
        user = pwd.getpwnam("rabbitmq")
        subprocess.run(["runuser", "-u", "rabbitmq", "--", "epmd", "-daemon"], check=True)
        for i in (1, 2, 3):
            self.dirs[i] = tempfile.mkdtemp(prefix="rabbitmq-cluster-%d-" % i)
            os.chown(self.dirs[i], user.pw_uid, user.pw_gid)
        for i in (1, 2, 3):
            self.start_node(i)
        for i in (2, 3):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.node(1))
            self.ctl(i, "start_app")
        status = self.ctl(1, "cluster_status", "--formatter", "json")
        running = json.loads(status)["running_nodes"]
        if len(running) != 3:
            raise RuntimeError("RabbitMQ's cluster has %s running" % running)
        return self

    def stop(self):
        for i in (3, 2, 1):
            if self.processes.get(i) and self.processes[i].poll() is None:
                os.kill(self.pid(i), signal.SIGCONT)
                self.ctl(i, "shutdown", check=False)
                self.processes[i].wait(60)
        subprocess.run(["epmd", "-kill"], capture_output=True)
        for d in self.dirs.values():
            shutil.rmtree(d, ignore_errors=True)

    def pid(self, i):
        with open(f"{self.dirs[i]}/pid") as f:
            return int(f.read().strip())

    def declare(self, queue, through):
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", self.port(through)))
        connection.channel().queue_declare(queue, durable=True,
                                           arguments={"x-queue-type": "quorum"})
        connection.close()

    def leader(self, queue):
        def find():
            rows = json.loads(self.ctl(1, "list_queues", "name", "leader", "--formatter", "json"))
            row = next(r for r in rows if r["name"] == queue)
            return row["leader"] if row["leader"] else None
        leader = wait_for(find, 30, "a leader of " + queue)
        return int(leader.split("@")[0][len("rabbit"):])

    def kill(self, i):
        os.kill(self.pid(i), signal.SIGKILL)
        self.processes[i].wait(30)

    def pause(self, i):
        os.kill(self.pid(i), signal.SIGSTOP)

    def recover(self, i, fault):
        if fault == "pause":
            os.kill(self.pid(i), signal.SIGCONT)
        else:
            self.start_node(i)
        wait_for(lambda: len(json.loads(self.ctl(1, "cluster_status", "--formatter", "json"))
                             ["running_nodes"]) == 3, 120, "RabbitMQ node %d back" % i)

    def messages(self, queue):
        rows = json.loads(self.ctl(1, "list_queues", "name", "messages", "--formatter", "json"))
        return next(r["messages"] for r in rows if r["name"] == queue)


def publish_through_fault(host, port, queue, fault):
    """Publishes at RATE with confirms through host:port; calls fault() after BEFORE_S. Returns
    (confirm arrival times, fault time, nacks, unconfirmed at the end, error)."""
    confirms, state = [], {"nacks": 0, "next": 1, "acked": 0, "error": None, "fault_at": None}
    parameters = pika.ConnectionParameters(host, port, heartbeat=0, blocked_connection_timeout=60)

    def on_open(connection):
        connection.channel(on_open_callback=on_channel)

    def on_channel(channel):
        state["channel"] = channel
        channel.confirm_delivery(on_confirm)
        state["start"] = time.monotonic()
        tick()

    def on_confirm(frame):
        method = frame.method
        now = time.monotonic()
        tag = method.delivery_tag
        count = tag - state["acked"] if method.multiple else 1
        if isinstance(method, pika.spec.Basic.Nack):
            state["nacks"] += count
        state["acked"] = max(state["acked"], tag)
        confirms.append(now)

    def tick():
        elapsed = time.monotonic() - state["start"]
        if state["fault_at"] is None and elapsed >= BEFORE_S:
            state["fault_at"] = time.monotonic()
            fault()
        if elapsed < BEFORE_S + AFTER_S:
            # Publish what is due by now (2 per millisecond), every 5 ms.
            due = int(elapsed * RATE) + 1
            properties = pika.BasicProperties(delivery_mode=2)
            while state["next"] <= due:
                state["channel"].basic_publish("", queue, BODY, properties)
                state["next"] += 1
            connection.ioloop.call_later(0.005, tick)
        else:
            state["end"] = time.monotonic()
            wait_confirms()

    def wait_confirms():
        if state["acked"] >= state["next"] - 1 or time.monotonic() - state["end"] > 20:
            connection.close()
        else:
            connection.ioloop.call_later(0.05, wait_confirms)

    def on_closed(_connection, reason):
        if not isinstance(reason, pika.exceptions.ConnectionClosedByClient):
            state["error"] = repr(reason)
        connection.ioloop.stop()

    connection = pika.SelectConnection(parameters, on_open_callback=on_open,
                                       on_open_error_callback=on_closed,
                                       on_close_callback=on_closed)
    connection.ioloop.start()
    published = state["next"] - 1
    unconfirmed = published - state["acked"]
    return confirms, state["fault_at"], state["nacks"], unconfirmed, state["error"], published


def longest_pause(times, start, end):
    window = [t for t in times if start <= t <= end]
    return max((b - a for a, b in zip(window, window[1:])), default=float("nan"))


def p5(broker, runs):
    results = {}
    for fault in ("kill", "pause"):
        rows = []
        for run in range(runs):
            queue = "p5-%s-%d" % (fault, run)
            broker.declare(queue, through=1 + run % 3)
            leader = broker.leader(queue)
            through = next(i for i in (1, 2, 3) if i != leader)
            action = broker.kill if fault == "kill" else broker.pause
            fault_wall = []

            def act(leader=leader, action=action, fault_wall=fault_wall):
                fault_wall.append(datetime.datetime.now().strftime("%H:%M:%S.%f")[:-3])
                action(leader)
            marks = broker.log_marks() if hasattr(broker, "log_marks") else None
            confirms, fault_at, nacks, unconfirmed, error, published = publish_through_fault(
                broker.host(through), broker.port(through), queue, act)
            # From the last confirm before the fault to the last one of all (those that came
            # only after publishing stopped count: RabbitMQ's paused leader holds every confirm
            # for longer than the run).
            before_fault = [t for t in confirms if t < fault_at]
            after = longest_pause(confirms, before_fault[-1] if before_fault else fault_at,
                                  float("inf"))
            noise = longest_pause(confirms, fault_at - 1.0, fault_at)
            broker.recover(leader, fault)
            # Every message published is in the queue once: none lost, none twice (nothing
            # consumes from it).
            try:
                stored = wait_for(lambda: broker.messages(queue) == published and published, 30,
                                  "the queue to hold what was published")
            except RuntimeError:
                stored = broker.messages(queue)
            rows.append({"pause_ms": after * 1000, "noise_ms": noise * 1000, "nacks": nacks,
                         "unconfirmed": unconfirmed, "error": error, "leader": leader,
                         "through": through, "published": published,
                         "stored": published if stored is True else stored})
            print("  %s %s run %d: longest pause %.0f ms (noise %.1f ms), nacks %d, "
                  "unconfirmed %d, published %d, in the queue %d%s"
                  % (broker.name, fault, run + 1, after * 1000, noise * 1000, nacks, unconfirmed,
                     published, rows[-1]["stored"], ", error " + error if error else ""),
                  flush=True)
            if LOGS and marks is not None and (after > GOALS[fault] or noise > 0.1):
                print("    the fault (n%d) at %s" % (leader, fault_wall[0]))
                broker.print_logs(marks)
        results[fault] = rows
    return results


def pika_throughput(host, port, queue, seconds):
    """One publisher (1,000 unconfirmed at most) and one consumer (prefetch 1,000, acks every
    message), each a pika SelectConnection in a thread of its own: messages consumed per second
    over the last seconds-2 s (the first two warm up)."""
    consumed = []
    stop = threading.Event()

    def consumer():
        def on_message(channel, method, _properties, _body):
            consumed.append(time.monotonic())
            channel.basic_ack(method.delivery_tag)

        connection = pika.BlockingConnection(pika.ConnectionParameters(host, port))
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        channel.basic_consume(queue, on_message)
        while not stop.is_set():
            connection.process_data_events(time_limit=0.1)
        connection.close()

    def publisher():
        state = {"next": 1, "acked": 0}

        def on_open(connection):
            connection.channel(on_open_callback=on_channel)

        def on_channel(channel):
            state["channel"] = channel
            channel.confirm_delivery(on_confirm)
            fill()

        def on_confirm(frame):
            state["acked"] = max(state["acked"], frame.method.delivery_tag)
            fill()

        def fill():
            if stop.is_set():
                if connection.is_open:
                    connection.close()
                return
            properties = pika.BasicProperties(delivery_mode=2)
            while state["next"] - 1 - state["acked"] < 1000:
                state["channel"].basic_publish("", queue, BODY, properties)
                state["next"] += 1

        def check():
            if stop.is_set():
                if connection.is_open:
                    connection.close()
            else:
                connection.ioloop.call_later(0.1, check)

        connection = pika.SelectConnection(
            pika.ConnectionParameters(host, port), on_open_callback=on_open,
            on_close_callback=lambda *_: connection.ioloop.stop())
        connection.ioloop.call_later(0.1, check)
        connection.ioloop.start()

    threads = [threading.Thread(target=consumer), threading.Thread(target=publisher)]
    for thread in threads:
        thread.start()
    start = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(60)
    counted = [t for t in consumed if t >= start + 2]
    return len(counted) / max(0.001, (start + seconds) - (start + 2))


def rabbitmq_c_throughput(host, port, queue, seconds):
    """bench/amqp_load.c (rabbitmq-c, each publish its own write): one publisher with 1,000
    unconfirmed at most, one consumer with prefetch 1,000 acking every message; messages received
    per second after a 2 s warm-up."""
    done = subprocess.run([str(compare.BIN / "amqp-load"), host, str(port), queue, str(seconds),
                           "--size", "1024", "--persistent", "--window", "1000",
                           "--prefetch", "1000", "--ack-every", "1"],
                          capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError("amqp-load: " + done.stderr)
    return json.loads(done.stdout)["received_per_s"]


def perf_throughput(broker, leader, queue, seconds):
    summary = pathlib.Path(tempfile.mktemp(suffix=".json"))
    uri = "amqp://guest:guest@%s:%d/%%2F" % (broker.host(leader), broker.port(leader))
    args = [str(compare.BIN / "hamq-perf"), "-h", uri, "-x", "1", "-y", "1", "-u", queue,
            "-s", "1024", "-c", "1000", "-q", "1000", "-f", "persistent", "--auto-delete",
            "false", "-z", str(seconds), "--json", str(summary)]
    if broker.name == "RabbitMQ":
        args += ["--queue-args", "x-queue-type=quorum"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError("hamq-perf: " + done.stderr)
    result = json.loads(summary.read_text())
    summary.unlink()
    return result


def p3(broker, runs, seconds):
    rows = []
    for run in range(runs):
        queue = "p3-perf-%d" % run
        broker.declare(queue, through=1 + run % 3)
        leader = broker.leader(queue)
        perf = perf_throughput(broker, leader, queue, seconds)
        queue = "p3-pika-%d" % run
        broker.declare(queue, through=1 + run % 3)
        leader = broker.leader(queue)
        rate = pika_throughput(broker.host(leader), broker.port(leader), queue, seconds)
        queue = "p3-rabbitmq-c-%d" % run
        broker.declare(queue, through=1 + run % 3)
        leader = broker.leader(queue)
        c_rate = rabbitmq_c_throughput(broker.host(leader), broker.port(leader), queue, seconds)
        rows.append({"perf": perf, "pika_rate": rate, "c_rate": c_rate})
        print("  %s run %d: hamq-perf %.0f msg/s received, rabbitmq-c %.0f msg/s, pika %.0f msg/s"
              % (broker.name, run + 1, perf.get("receive_rate", float("nan")), c_rate, rate),
              flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--only", choices=["p5", "p3"])
    parser.add_argument("--brokers", default="hamq,rabbitmq")
    parser.add_argument("--markdown")
    parser.add_argument("--logs", action="store_true",
                        help="print hamq's node logs of a run that misses its goal")
    options = parser.parse_args()
    global LOGS
    LOGS = options.logs
    if os.environ.get("HAMQ_NETNS") != "1":
        sys.exit("run inside a network namespace of its own: tests/in_netns.sh " + sys.argv[0])
    results = {}
    for name in options.brokers.split(","):
        broker = HamqCluster() if name == "hamq" else RabbitCluster()
        print("%s: starting three nodes" % broker.name, flush=True)
        broker.start()
        try:
            results[broker.name] = {}
            if options.only in (None, "p5"):
                results[broker.name]["p5"] = p5(broker, options.runs)
            if options.only in (None, "p3"):
                results[broker.name]["p3"] = p3(broker, options.runs, options.seconds)
        except Exception:
            if hasattr(broker, "print_logs"):
                broker.print_logs()
            raise
        finally:
            broker.stop()
    report = summarize(results, options)
    print(report)
    if options.markdown:
        with open(options.markdown, "a") as out:
            out.write("\n" + report)


def summarize(results, options):
    lines = ["## %s, replicated queues on three nodes of this host (issue 15: P3, P5a, P5b)"
             % time.strftime("%Y-%m-%d"), "",
             "Machine: %s. `tests/in_netns.sh bench/cluster_failover.py --runs %d --seconds %d`; "
             "medians of %d runs (each run's figure in brackets)." % (
                 compare.machine(), options.runs, options.seconds, options.runs), ""]
    if any("p5" in r for r in results.values()):
        lines += ["P5: longest pause between two confirms, publishing 1 KB persistent messages at "
                  "2,000 msg/s (pika) through a node that does not lead the queue, when the "
                  "leader is killed (P5a, SIGKILL; goal 50 ms) or paused (P5b, SIGSTOP; goal "
                  "500 ms). Noise: the longest pause in the second before the fault.", "",
                  "| broker | fault | longest pause (ms) | runs | noise (ms) | nacks | "
                  "unconfirmed | in the queue − published | errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, result in results.items():
            for fault, rows in result.get("p5", {}).items():
                pauses = [r["pause_ms"] for r in rows]
                lines.append("| %s | %s | %.0f | %s | %.1f | %d | %d | %d | %d |" % (
                    name, "SIGKILL (P5a)" if fault == "kill" else "SIGSTOP (P5b)",
                    statistics.median(pauses), ", ".join("%.0f" % p for p in pauses),
                    statistics.median(r["noise_ms"] for r in rows), sum(r["nacks"] for r in rows),
                    sum(r["unconfirmed"] for r in rows),
                    sum(r["stored"] - r["published"] for r in rows),
                    sum(1 for r in rows if r["error"])))
        lines.append("")
    if any("p3" in r for r in results.values()):
        lines += ["P3: one publisher (1,000 unconfirmed at most) and one consumer (prefetch "
                  "1,000), 1 KB persistent, both on the leader's node, %d s; messages received "
                  "per second." % options.seconds, "",
                  "| broker | rabbitmq-c msg/s | runs | hamq-perf msg/s | runs | pika msg/s | runs |",
                  "|---|---|---|---|---|---|---|"]
        for name, result in results.items():
            rows = result.get("p3")
            if not rows:
                continue
            perf = [r["perf"].get("receive_rate", 0) for r in rows]
            pika_rates = [r["pika_rate"] for r in rows]
            c_rates = [r["c_rate"] for r in rows]
            lines.append("| %s | %.0f | %s | %.0f | %s | %.0f | %s |" % (
                name, statistics.median(c_rates), ", ".join("%.0f" % p for p in c_rates),
                statistics.median(perf), ", ".join("%.0f" % p for p in perf),
                statistics.median(pika_rates), ", ".join("%.0f" % p for p in pika_rates)))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
