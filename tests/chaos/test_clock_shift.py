"""libclock_shift.so, the clock nemesis's preload: it moves the wall clock of the process it is
loaded into by the offset in its file, changed while the process runs, and leaves the monotonic
clock alone."""

import os
import pathlib
import struct
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN_DIR = pathlib.Path(os.environ.get("HAMQ_BIN_DIR", REPO / "build" / "bin"))

# Prints time.time(), time.monotonic() and gettimeofday's seconds (through datetime) each time a
# line comes in on its standard input.
PROBE = """
import datetime, sys, time
for _ in sys.stdin:
    print(time.time(), time.monotonic(), datetime.datetime.now().timestamp(), flush=True)
"""


def test_the_wall_clock_moves_by_the_offset_in_the_file_and_the_monotonic_clock_does_not(tmp_path):
    shift_file = tmp_path / "clock"
    shift_file.write_bytes(struct.pack("=q", 0))
    env = dict(os.environ, LD_PRELOAD=str(BIN_DIR / "libclock_shift.so"),
               HAMQ_CLOCK_SHIFT_FILE=str(shift_file))
    probe = subprocess.Popen([sys.executable, "-c", PROBE], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env)
    def read():
        probe.stdin.write("\n")
        probe.stdin.flush()
        wall, monotonic, datetime_wall = map(float, probe.stdout.readline().split())
        return wall - time.time(), monotonic - time.monotonic(), datetime_wall - time.time()

    try:
        wall, monotonic, datetime_wall = read()
        assert abs(wall) < 0.5 and abs(datetime_wall) < 0.5
        for shift_s in (3600, -86400, 1.5, 0):
            with open(shift_file, "r+b") as out:
                out.write(struct.pack("=q", int(shift_s * 1e9)))
            wall, monotonic_now, datetime_wall = read()
            assert abs(wall - shift_s) < 0.5, (shift_s, wall)
            assert abs(datetime_wall - shift_s) < 0.5, (shift_s, datetime_wall)
            assert abs(monotonic_now - monotonic) < 0.5
    finally:
        probe.stdin.close()
        probe.wait(10)
