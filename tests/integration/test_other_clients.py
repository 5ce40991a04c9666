"""The handshake with the RabbitMQ Java client and rabbitmq-c, and messaging with rabbitmq-c."""

import pathlib
import subprocess

from hamq_server import BIN_DIR

CLIENTS = pathlib.Path(__file__).resolve().parents[1] / "clients"
JAVA_CLASSPATH = ["/usr/share/java/amqp-client.jar", "/usr/share/java/slf4j-api.jar",
                  "/usr/share/java/slf4j-nop.jar"]


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


def test_java_client(server, tmp_path):
    classpath = ":".join(JAVA_CLASSPATH)
    compiled = run(["javac", "-cp", classpath, "-d", str(tmp_path),
                    str(CLIENTS / "Handshake.java")])
    assert compiled.returncode == 0, compiled.stderr
    result = run(["java", "-cp", f"{tmp_path}:{classpath}", "Handshake", str(server.port)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"
    assert server.alive()


def test_rabbitmq_c_client(server):
    result = run([str(BIN_DIR / "rabbitmq_c_handshake"), str(server.port)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"
    assert server.alive()


def test_rabbitmq_c_messaging(server):
    result = run([str(BIN_DIR / "rabbitmq_c_messaging"), str(server.port)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "OK"
