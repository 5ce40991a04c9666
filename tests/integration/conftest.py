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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # A failing test shows what its servers logged: a failure seen once in CI can then be read,
    # not guessed at.
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        servers = {name: value} if isinstance(value, HamqServer) else {
            "%s node %s" % (name, i): node for i, node in getattr(value, "nodes", {}).items()}
        for label, server in servers.items():
            if isinstance(server, HamqServer) and server.log:
                report.sections.append(("hamq-server log (%s)" % label,
                                        "\n".join(server.log[-200:])))
