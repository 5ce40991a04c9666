"""hamq-perf, the load generator, against hamq: counts, the JSON summary and PerfTest's output."""

import json
import subprocess

from hamq_server import BIN_DIR


def perf(server, *args, timeout=60):
    return subprocess.run([str(BIN_DIR / "hamq-perf"), "-h",
                           f"amqp://guest:guest@127.0.0.1:{server.port}/%2F", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_fixed_count_with_confirms_arrives_complete(server, tmp_path):
    summary = tmp_path / "summary.json"
    result = perf(server, "-x", "2", "-y", "1", "-u", "perf-q", "-s", "100", "-C", "5000",
                  "-c", "100", "-A", "50", "-q", "500", "--json", str(summary))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(summary.read_text())
    assert data["sent"] == 10000
    assert data["confirmed"] == 10000
    assert data["nacked"] == 0
    assert data["received"] == 10000
    assert data["consumer_latency_us"]["count"] == 10000
    assert 0 < data["consumer_latency_us"]["median"] <= data["consumer_latency_us"]["max"]
    assert "sending rate avg" in result.stdout
    assert "consumer latency min/median/75th/95th/99th/max" in result.stdout


def test_fan_out_to_every_consumer_queue(server, tmp_path):
    summary = tmp_path / "summary.json"
    result = perf(server, "-x", "1", "-y", "3", "-C", "1000", "-a", "--json", str(summary))
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(summary.read_text())
    assert data["sent"] == 1000
    assert data["received"] == 3000  # one server-named queue per consumer, all bound


def test_bad_uri_is_refused():
    result = subprocess.run([str(BIN_DIR / "hamq-perf"), "-h", "http://x", "-z", "1"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert "URI must start with amqp://" in result.stderr


def test_amqp_load_the_benchmarks_rabbitmq_c_client_counts_what_it_moved(server):
    # bench/amqp_load.c: the load client that is not hamq's own code (rabbitmq-c).
    import pika
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.port))
    connection.channel().queue_declare("load-q", durable=True)
    connection.close()
    done = subprocess.run([str(BIN_DIR / "amqp-load"), "127.0.0.1", str(server.port), "load-q",
                           "2", "--warmup", "1", "--size", "1024", "--persistent",
                           "--window", "100", "--ack-every", "10"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["nacked"] == 0
    assert 0 < data["received"] <= data["published"]
    assert 0 < data["confirmed"] <= data["published"]
    assert data["published"] - data["confirmed"] <= 100  # the window
    assert data["received_per_s"] > 0
    # A queue that is not there: the broker closes the channel, and amqp-load says so.
    done = subprocess.run([str(BIN_DIR / "amqp-load"), "127.0.0.1", str(server.port), "absent",
                           "2", "--warmup", "1"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert "closed the channel or connection" in done.stderr
