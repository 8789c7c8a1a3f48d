"""A broker owned by one test: its own data directory and free loopback port, started from
OTTLA_BIN (default <repo>/target/release/ottla), stopped with SIGTERM or SIGKILL and started
again on the same directory and port. stderr/stdout go to one log file per broker, appended to
across restarts (each start marked by a header line)."""

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OTTLA_BIN = os.environ.get("OTTLA_BIN", os.path.join(REPO, "target", "release", "ottla"))
READY_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20


def _die_with_parent():
    # Runs in the child before exec: the broker gets SIGKILL if the test process dies.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


@contextlib.contextmanager
def environment(env):
    """Sets these environment variables (the broker started inside reads them), then puts
    back what was there."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnBroker:
    """One broker identity (data dir + port) that can be started, stopped, killed and started
    again (the crash tests' `crashkit.Broker` builds on it)."""

    def __init__(self, data_dir, log_path, extra_args=(), port=None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.proc = None
        self.starts = 0
        self._run_offset = 0

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def args(self):
        return [OTTLA_BIN, "--listen", self.bootstrap, "--advertise", self.bootstrap,
                "--data-dir", self.data_dir, *self.extra_args]

    def start(self):
        assert self.proc is None, "broker already running"
        if not os.path.isfile(OTTLA_BIN):
            raise RuntimeError(f"no broker binary at {OTTLA_BIN}: cargo build --release --bin ottla")
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(f"----- start #{self.starts}: {' '.join(self.args())}\n".encode())
            self._run_offset = f.tell()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), NO_COLOR="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "ottla ready on" not in self.run_log():
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise RuntimeError(f"broker exited with {rc} before it was ready:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill9()
                raise RuntimeError(f"broker not ready after {READY_TIMEOUT_S} s:\n{self.tail()}")
            time.sleep(0.02)

    def stop(self):
        """SIGTERM; the broker must exit 0 (it flushes its logs) within STOP_TIMEOUT_S."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            raise AssertionError(f"broker did not stop within {STOP_TIMEOUT_S} s of SIGTERM:\n{self.tail()}")
        self.proc = None
        assert rc == 0, f"broker exited with {rc} on SIGTERM:\n{self.tail()}"
        self.check_no_panic()

    def kill9(self):
        """SIGKILL: no shutdown code runs, no clean-shutdown marker is written."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.check_no_panic()

    def restart(self):
        self.stop()
        self.start()

    def cleanup(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(10)
            except Exception:
                pass
            self.proc = None

    def full_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def run_log(self):
        """The lines of the current (or last) run only."""
        with open(self.log_path, "rb") as f:
            f.seek(self._run_offset)
            return f.read().decode("utf-8", "replace")

    def tail(self, n=60):
        return "\n".join(self.full_log().splitlines()[-n:])

    def check_no_panic(self):
        assert "panicked" not in self.full_log(), f"broker panicked:\n{self.tail()}"
