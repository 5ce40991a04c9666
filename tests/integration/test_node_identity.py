"""The node's identity in its data directory (DATA_DIR/NODE): kept across restarts, refused under
another --node-name."""

import subprocess
import tempfile

from hamq_server import BIN_DIR, HamqServer


def identity(data_dir):
    with open(f"{data_dir}/NODE") as node:
        return dict(line.split(" ", 1) for line in node.read().splitlines()
                    if line and not line.startswith("#"))


def test_identity_is_kept_and_another_name_is_refused():
    with tempfile.TemporaryDirectory(prefix="hamq-test-") as data_dir:
        server = HamqServer("--node-name", "n1", data_dir=data_dir).start()
        assert server.stop() == 0
        first = identity(data_dir)
        assert first["node_name"] == "n1" and first["node_id"] == "1"
        assert len(first["cluster_id"]) == 32
        server = HamqServer("--node-name", "n1", data_dir=data_dir).start()
        assert server.stop() == 0
        assert identity(data_dir) == first
        refused = subprocess.run(
            [str(BIN_DIR / "hamq-server"), "--port", "0", "--bind", "127.0.0.1", "--data-dir",
             data_dir, "--node-name", "n2"], capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0
        assert f"data directory {data_dir} belongs to node 'n1', not 'n2'" in refused.stdout
