"""Several real hamq-server processes forming a cluster, for the cluster tests.

Node i listens on 127.0.0.1i (127.0.0.11, .12, ...) for clients (port 5672) and for its peers
(port 25672), and dials its peers from that address: run the tests in a network namespace of
their own (tests/in_netns.sh, as ctest does), where iptables can cut the links between nodes while
clients, on 127.0.0.1, still reach every node. Every process is stopped by its pid.
"""

import os
import subprocess
import tempfile
import time

import pika

from hamq_server import HamqServer

CLIENT_PORT = 5672
CLUSTER_PORT = 25672
MANAGEMENT_PORT = 15672


def require_own_network_namespace():
    if os.environ.get("HAMQ_NETNS") != "1":
        raise RuntimeError("cluster tests run in a network namespace of their own: "
                           "tests/in_netns.sh python3 -m pytest ...")


def address(i):
    return "127.0.0.1%d" % i


class Cluster:
    def __init__(self, size=3):
        require_own_network_namespace()
        self.dir = tempfile.TemporaryDirectory(prefix="hamq-cluster-")
        self.secret = os.path.join(self.dir.name, "secret")
        with open(self.secret, "w") as out:
            out.write("cluster-test-secret\n")
        self.seeds = ",".join("n%d@%s:%d" % (i, address(i), CLUSTER_PORT)
                              for i in range(1, size + 1))
        self.nodes = {i: self._node(i) for i in range(1, size + 1)}

    def _node(self, i, seeds=True):
        data_dir = os.path.join(self.dir.name, "n%d" % i)
        os.makedirs(data_dir, exist_ok=True)
        node = HamqServer(data_dir=data_dir)
        node.args = [node.args[0], "--node-name", "n%d" % i, "--bind", address(i),
                     "--port", str(CLIENT_PORT), "--cluster-port", str(CLUSTER_PORT),
                     "--cluster-secret-file", self.secret,
                     "--management-port", str(MANAGEMENT_PORT), "--data-dir", data_dir]
        if seeds:
            node.args += ["--cluster-seeds", self.seeds]
        return node

    def add_blank_node(self, i):
        """Starts node i alone, without seeds (a cluster of one), with the cluster's secret: a
        node that `hamqctl join_cluster` can add."""
        self.nodes[i] = self._node(i, seeds=False)
        self.nodes[i].start()
        return self.nodes[i]

    def start(self):
        for node in self.nodes.values():
            node.start(wait=False)
        for node in self.nodes.values():
            node.wait_listening()
        return self

    def stop(self):
        """Stops every node still running (SIGTERM); each must exit cleanly (0)."""
        unclean = []
        for i, node in self.nodes.items():
            if node.process is not None and node.alive():
                status = node.stop()
                if status != 0:
                    unclean.append("n%d exited with %s:\n%s" % (i, status, "\n".join(node.log[-50:])))
        self.dir.cleanup()
        assert not unclean, "\n".join(unclean)

    def connect(self, i):
        return pika.BlockingConnection(pika.ConnectionParameters(
            host=address(i), port=CLIENT_PORT, connection_attempts=1, socket_timeout=5,
            blocked_connection_timeout=10))

    def hamqctl(self, i, *args):
        """Runs hamqctl against node i; returns its stdout (it must succeed)."""
        from hamq_server import BIN_DIR
        done = subprocess.run([str(BIN_DIR / "hamqctl"), "-n", "%s:%d" % (address(i), MANAGEMENT_PORT),
                               *args], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, "hamqctl %s: %s%s" % (args, done.stdout, done.stderr)
        return done.stdout

    def hamqctl_fails(self, i, *args):
        """Runs hamqctl against node i, which must refuse; returns (exit code, stderr)."""
        from hamq_server import BIN_DIR
        done = subprocess.run([str(BIN_DIR / "hamqctl"), "-n", "%s:%d" % (address(i), MANAGEMENT_PORT),
                               *args], capture_output=True, text=True, timeout=30)
        assert done.returncode != 0, "hamqctl %s succeeded: %s" % (args, done.stdout)
        return done.returncode, done.stderr

    @staticmethod
    def cut(i, others):
        """Drops every packet between node i and the nodes in `others` (both ways)."""
        for j in others:
            for src, dst in ((address(i), address(j)), (address(j), address(i))):
                subprocess.run(["iptables", "-A", "INPUT", "-s", src, "-d", dst, "-j", "DROP"],
                               check=True)

    @staticmethod
    def heal():
        subprocess.run(["iptables", "-F", "INPUT"], check=True)


def exists(cluster, i, kind, name):
    """True if node i has the queue or exchange (a passive declare), False if it answers 404."""
    connection = cluster.connect(i)
    try:
        channel = connection.channel()
        if kind == "queue":
            channel.queue_declare(name, passive=True)
        else:
            channel.exchange_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as closed:
        assert closed.reply_code == 404
        return False
    finally:
        if connection.is_open:
            connection.close()


def eventually(condition, timeout_s=10, what="the condition"):
    """Polls `condition` until it returns a true value (which it returns) or time runs out."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as error:  # noqa: BLE001 (a node not ready yet: try again)
            last = error
        time.sleep(0.05)
    raise AssertionError("%s did not hold within %ss (last error: %r)" % (what, timeout_s, last))
