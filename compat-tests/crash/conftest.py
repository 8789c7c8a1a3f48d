"""Fixtures for the crash tests: brokers owned by the test (own data dir, own port), always
killed and removed at teardown; on failure, each broker's log tail is printed.

OTTLA_BIN names the broker binary (default <repo>/target/release/ottla).
OTTLA_CRASH_KEEP=1 keeps the temporary data directories (their paths are printed).
"""

import os
import shutil
import sys
import tempfile
import uuid

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import crashkit  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def fsync_supported():
    return "--fsync" in crashkit.binary_help()


@pytest.fixture(params=["always", "default"], ids=lambda v: f"fsync={v}")
def fsync(request, fsync_supported):
    """The flush policy to start brokers with: None = the broker's default (no flag)."""
    if request.param == "default":
        return None
    if not fsync_supported:
        pytest.skip(f"{crashkit.OTTLA_BIN} --help does not list --fsync yet")
    return request.param


@pytest.fixture
def brokers(request):
    """A factory: brokers(fsync=None) -> crashkit.Broker (not started), with its own temp
    data dir and log file. All are SIGKILLed and their directories removed at teardown."""
    made = []
    root = tempfile.mkdtemp(prefix="ottla-crash-")

    def make(fsync=None):
        n = len(made)
        data_dir = os.path.join(root, f"data{n}")
        os.makedirs(data_dir)
        b = crashkit.Broker(data_dir, os.path.join(root, f"broker{n}.log"), fsync=fsync)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.cleanup()
        failed = any(getattr(request.node, "rep_" + w, None) is not None
                     and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
        if failed:
            for b in made:
                print(f"\n----- broker log tail ({b.log_path}, port {b.port}, data {b.data_dir}) -----")
                print(b.tail())
        if os.environ.get("OTTLA_CRASH_KEEP") == "1":
            print(f"\nkept crash-test files in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def topic(request):
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:50]
    return f"crash-{base}-{uuid.uuid4().hex[:6]}"
