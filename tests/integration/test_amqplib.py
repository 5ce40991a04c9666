"""amqplib (npm, tests/clients/node) against the real server: the programs in compat.js."""

import json
import pathlib
import subprocess


NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "clients" / "node"


def run_scenario(server, scenario):
    finished = subprocess.run(["node", str(NODE_DIR / "compat.js"), str(server.port), scenario],
                              capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout.strip().splitlines()[-1])


def test_amqplib_is_installed():
    assert (NODE_DIR / "node_modules" / "amqplib").is_dir(), (
        "amqplib is missing: scripts/install-deps.sh installs it")


def test_update_secret_is_accepted(server):
    assert run_scenario(server, "update_secret")["queue"].startswith("amq.gen-")


def test_work_queue_tutorial(server):
    assert run_scenario(server, "work_queue")["received"] == ["first.", "second..", "third..."]


def test_close_right_after_filling_the_write_buffer_completes(server):
    assert run_scenario(server, "close_while_publishing")["sent"] > 100


def test_unbind_from_a_missing_exchange(server):
    assert run_scenario(server, "unbind_missing")["queue"].startswith("amq.gen-")
