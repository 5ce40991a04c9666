"""Starts and stops a real hamq-server for integration tests.

The binary comes from $HAMQ_BIN_DIR (ctest sets it) or build/bin. The server listens on a port the
kernel picks (--port 0); its first log line says which.
"""

import os
import pathlib
import re
import signal
import subprocess
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("HAMQ_BIN_DIR", REPO / "build" / "bin"))
START_TIMEOUT_S = 10
STOP_TIMEOUT_S = 10


class HamqServer:
    def __init__(self, *extra_args, data_dir=None):
        """`data_dir`: a directory of the caller's (kept); by default a temporary one."""
        self.data_dir = None if data_dir else tempfile.TemporaryDirectory(prefix="hamq-test-")
        self.args = [str(BIN_DIR / "hamq-server"), "--port", "0", "--bind", "127.0.0.1",
                     "--management-port", "0", "--cluster-port", "0",
                     "--data-dir", data_dir or self.data_dir.name,
                     *extra_args]
        self.management_port = None
        self.process = None
        self.port = None
        self.log = []
        self._reader = None

    def start(self, wait=True):
        """`wait=False`: returns once the process runs; wait_listening() waits for it to serve."""
        self.port = None
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        listening = threading.Event()
        self._listening = listening

        def read_log():
            for line in self.process.stdout:
                self.log.append(line.rstrip("\n"))
                managed = re.search(r"management listening on \[[^\]]*\]:(\d+)", line)
                if managed:
                    self.management_port = int(managed.group(1))
                    continue
                match = re.search(r"listening on \[[^\]]*\]:(\d+)", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    listening.set()

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout_s=START_TIMEOUT_S):
        if not self._listening.wait(timeout_s):
            self.process.kill()
            raise RuntimeError("hamq-server did not start:\n" + "\n".join(self.log))
        return self

    def kill(self):
        """SIGKILL: the process dies on the spot, its data directory stays for a restart."""
        self.process.kill()
        self.process.wait()
        self._reader.join(5)

    def pause(self):
        """SIGSTOP: the process hangs (its sockets stay open, nothing answers) until resume()."""
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        """SIGTERM, and the exit status (0 for a clean shutdown)."""
        if self.process.poll() is None:
            if getattr(self, "paused", False):
                self.resume()
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise RuntimeError("hamq-server ignored SIGTERM")
        self._reader.join(5)
        if self.data_dir:
            self.data_dir.cleanup()
        return self.process.returncode

    def wait_for_log(self, pattern, timeout_s=5):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.log):
                return True
            time.sleep(0.05)
        return False
