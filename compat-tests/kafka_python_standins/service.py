"""Stand-in for kafka-python's test/service.py (absent from the 3.0.12 sdist).

ExternalService: with KAFKA_URI set, the integration fixtures wrap the running broker in
one; nothing is spawned.

SpawnedService: without KAFKA_URI, KafkaFixture runs `$KAFKA_ROOT/bin/kafka-run-class.sh
kafka.Kafka <properties>` through it (KAFKA_ROOT=compat-tests/kafka_python_standins/kafka_root,
whose scripts start ottla). The interface is the one the fixtures use: start(), stop(),
wait_for(pattern, timeout) -> bool, dump_logs(), plus is_alive() and the collected lines.

* The child's stdout and stderr are merged into one pipe and read line by line in a daemon
  thread; every line is kept (for wait_for and dump_logs) and logged at INFO on the
  `test.service.spawned` logger, which pytest captures per test phase: a failing test's report
  shows the broker lines of its setup/call ("Captured log ...") next to the client's.
* wait_for searches the lines collected so far and those that arrive, by regex, until the
  timeout; it returns False early once the child has exited without the pattern.
* stop() sends SIGTERM to the child, waits STOP_TIMEOUT_S, then SIGKILLs its process group.
* The child gets SIGKILL if the test process dies (PR_SET_PDEATHSIG), so no broker outlives
  pytest.

Importing this module sets OTTLA_PY (when unset) to the interpreter running the tests: the
stand-in kafka-topics.sh runs under the fixtures' environment and uses it to find a Python
with kafka-python.
"""

import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)
broker_log = logging.getLogger(__name__ + ".spawned")
broker_log.setLevel(logging.INFO)  # propagates to pytest's capture handler whatever root's level

os.environ.setdefault("OTTLA_PY", sys.executable)

STOP_TIMEOUT_S = 10
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ExternalService:
    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def start(self):
        pass

    def stop(self):
        pass

    def wait_for(self, pattern, timeout=30):
        return True

    def dump_logs(self):
        pass


def _die_with_parent():
    # Runs in the child between fork and exec.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class SpawnedService:
    """One child process (the command `args`, environment `env`) and its output."""

    def __init__(self, args=None, env=None):
        if not args:
            raise TypeError("SpawnedService needs the command to run (args)")
        self.args = [str(a) for a in args]
        self.env = env
        self.child = None
        self.lines = []
        self._cond = threading.Condition()
        self._reader = None
        self._eof = False
        self.name = os.path.basename(self.args[0])

    # -- lifecycle -----------------------------------------------------------------------

    def start(self):
        with self._cond:
            if self.child is not None:
                return
            log.info("Spawning: %s", " ".join(self.args))
            self.child = subprocess.Popen(
                self.args, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
            self._eof = False
            self._reader = threading.Thread(target=self._read, args=(self.child,),
                                            name="spawned-%d" % self.child.pid, daemon=True)
            self._reader.start()

    def _read(self, child):
        for raw in iter(child.stdout.readline, b""):
            line = _ANSI.sub("", raw.decode("utf-8", errors="replace").rstrip("\r\n"))
            broker_log.info("[%s pid %d] %s", self.name, child.pid, line)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        child.stdout.close()
        rc = child.wait()
        broker_log.info("[%s pid %d] exited with %s", self.name, child.pid, rc)
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def is_alive(self):
        with self._cond:
            return self.child is not None and not self._eof

    def stop(self):
        with self._cond:
            child, reader = self.child, self._reader
        if child is None:
            return
        if child.poll() is None:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                child.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) still running %d s after SIGTERM: SIGKILL",
                            self.name, child.pid, STOP_TIMEOUT_S)
        # Whatever is left of the child's process group (its broker included) goes too.
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        child.wait()
        if reader is not None:
            reader.join(timeout=5)
        log.info("%s (pid %d) stopped, exit status %s", self.name, child.pid, child.returncode)

    # -- output --------------------------------------------------------------------------

    def wait_for(self, pattern, timeout=30):
        regex = re.compile(pattern, re.IGNORECASE)
        deadline = time.monotonic() + timeout
        checked = 0
        with self._cond:
            while True:
                for line in self.lines[checked:]:
                    if regex.search(line):
                        log.info("Found %r in the output of %s", pattern, self.name)
                        return True
                checked = len(self.lines)
                if self.child is None or self._eof:
                    log.error("%s exited before printing %r", self.name, pattern)
                    return False
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("Waiting for %r timed out after %s seconds", pattern, timeout)
                    return False
                self._cond.wait(left)

    def dump_logs(self):
        with self._cond:
            lines = list(self.lines)
            pid = self.child.pid if self.child is not None else None
        out = ["===== output of %s (pid %s): %d lines =====" % (" ".join(self.args), pid, len(lines))]
        out.extend(lines)
        out.append("===== end of output (pid %s) =====" % (pid,))
        sys.stdout.write("\n".join(out) + "\n")
        sys.stdout.flush()
