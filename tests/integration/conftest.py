import sys
import pathlib

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from hamq_server import HamqServer  # noqa: E402


@pytest.fixture
def server():
    instance = HamqServer().start()
    yield instance
    assert instance.stop() == 0, "hamq-server did not exit cleanly:\n" + "\n".join(instance.log)
