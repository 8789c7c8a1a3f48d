"""kcat -G (librdkafka 2.0.2's balanced consumer) against the main broker: it joins a group,
consumes what was produced, commits on exit, and a second run resumes after it."""

import subprocess

from groups.util import create_topic, ends_of, kp_group_offsets, produce_keyed, unique

FMT = "%p %o %k %s\\n"


def kcat_group(kcat, bootstrap, group, topic, count, timeout=60):
    """kcat -G GROUP TOPIC -c COUNT: returns {(partition, offset): (key, value)}."""
    cmd = [kcat, "-b", bootstrap, "-G", group, "-c", str(count), "-q", "-f", FMT,
           "-X", "auto.offset.reset=earliest", topic]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        lines = len((e.stdout or b"").splitlines())
        err = (e.stderr or b"").decode(errors="replace")
        raise AssertionError(f"kcat -G did not get {count} records within {timeout} s; "
                             f"it printed {lines} lines; stderr: {err}") from None
    assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr.decode(errors='replace')}"
    out = {}
    for line in r.stdout.decode().splitlines():
        p, o, k, v = line.split(" ", 3)
        assert (int(p), int(o)) not in out, f"kcat printed {p}/{o} twice"
        out[(int(p), int(o))] = (k.encode(), v.encode())
    return out


def test_kcat_balanced_consumer_resumes_from_commits(kcat, bootstrap):
    topic, group = unique("kcat-g-topic"), unique("kcat-g")
    create_topic(bootstrap, topic, 3)
    first = produce_keyed(bootstrap, topic, 100, "kc1")
    assert kcat_group(kcat, bootstrap, group, topic, 100) == first

    # kcat committed its offsets when it closed: the group's offsets are the ends.
    ends = ends_of(first)
    assert {p: om[0] for (t, p), om in kp_group_offsets(bootstrap, group).items() if t == topic} == ends

    # A second run of the same group reads only what came after.
    second = produce_keyed(bootstrap, topic, 50, "kc2")
    assert kcat_group(kcat, bootstrap, group, topic, 50) == second
