"""A cluster of ottla nodes on hosts of their own: one Linux network namespace per node
(`ottla-t<pid>-<i>`), each with a veth pair into a bridge and its own address
10.203.<k>.<i>/24, every node on the same ports (9092 for clients, 9093 for the controller),
as on real machines. The test process (the clients) reaches every host through the bridge's
address 10.203.<k>.254. Needs root (ip netns, bridges); everything made is removed at
teardown, and only addresses made here are ever sent to.

Faults: isolate(i) takes the host's link down (no packet in or out; the process runs on),
heal(i) brings it up again; cut(a, b) drops every packet between hosts a and b (iptables DROP
rules in a's namespace, both directions; blackhole routes on both sides where iptables is
missing), uncut(a, b) removes them; cut_off(i) cuts host i from every other host (the clients
at .254 still reach it), rejoin(i) undoes that, heal_all() undoes every cut and isolation.
The nodes themselves are `cluster.Node`s (kill / start_node).
"""

import os
import shutil
import subprocess

from cluster import Cluster, Node

CLIENT_PORT = 9092
CONTROLLER_PORT = 9093


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def can_make_namespaces():
    """Whether this process may create network namespaces (root with ip(8))."""
    if os.geteuid() != 0:
        return False, "not root"
    probe = f"ottla-probe-{os.getpid()}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return False, f"ip netns add failed: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    return True, ""


class Hosts:
    """n namespaces on one bridge. `subnet` picks 10.203.<subnet>.0/24 (one per test module,
    so two modules never share addresses)."""

    def __init__(self, n, subnet=0):
        self.n = n
        tag = f"{os.getpid() % 100000}"
        self.bridge = f"otbr{tag}"
        self.prefix = f"10.203.{subnet}"
        self.names = [f"ottla-t{tag}-{i}" for i in range(1, n + 1)]
        self.veths = [f"otv{tag}-{i}" for i in range(1, n + 1)]
        self.made = False
        self.forward_rule = None
        self.cuts = set()  # (a, b) with a < b: hosts cut from each other
        self.isolated = set()

    def address(self, i):
        return f"{self.prefix}.{i}"

    def namespace(self, i):
        return self.names[i - 1]

    def up(self):
        self.made = True
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.254/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        # Where the Docker engine runs, bridged frames pass iptables' FORWARD chain, whose
        # policy it sets to DROP: let this bridge's own traffic through (removed at down()).
        if shutil.which("iptables"):
            self.forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
            sh("iptables", "-I", *self.forward_rule)
        for i in range(1, self.n + 1):
            ns, veth = self.namespace(i), self.veths[i - 1]
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "link", "set", veth, "master", self.bridge, "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        return self

    def isolate(self, i):
        """Host i loses its link: nothing in or out, the process keeps running."""
        sh("ip", "link", "set", self.veths[i - 1], "down")
        self.isolated.add(i)

    def heal(self, i):
        sh("ip", "link", "set", self.veths[i - 1], "up")
        self.isolated.discard(i)

    def _cut_rules(self, a, b, op):
        """Adds (op "-I") or deletes ("-D") the rules that drop a <-> b; all in a's namespace
        with iptables, else a blackhole route on each side."""
        if shutil.which("iptables"):
            ns = ["ip", "netns", "exec", self.namespace(a), "iptables"]
            sh(*ns, op, "INPUT", "-s", f"{self.address(b)}/32", "-j", "DROP", check=op == "-I")
            sh(*ns, op, "OUTPUT", "-d", f"{self.address(b)}/32", "-j", "DROP", check=op == "-I")
        else:
            verb = "add" if op == "-I" else "del"
            for x, y in ((a, b), (b, a)):
                sh("ip", "-n", self.namespace(x), "route", verb, "blackhole", f"{self.address(y)}/32",
                   check=verb == "add")

    def cut(self, a, b):
        """No packet between hosts a and b, either way (both keep their links: the clients
        and the third host still reach them)."""
        key = (min(a, b), max(a, b))
        if key not in self.cuts:
            self._cut_rules(*key, "-I")
            self.cuts.add(key)

    def uncut(self, a, b):
        key = (min(a, b), max(a, b))
        if key in self.cuts:
            self._cut_rules(*key, "-D")
            self.cuts.discard(key)

    def cut_off(self, i):
        """Host i reaches no other host and no other host reaches it; the clients (the
        bridge's address) still do."""
        for j in range(1, self.n + 1):
            if j != i:
                self.cut(i, j)

    def rejoin(self, i):
        for j in range(1, self.n + 1):
            if j != i:
                self.uncut(i, j)

    def heal_all(self):
        """Undoes every cut and isolation made through this object."""
        for a, b in sorted(self.cuts):
            self.uncut(a, b)
        for i in sorted(self.isolated):
            self.heal(i)

    def down(self):
        if not self.made:
            return
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)
        for veth in self.veths:
            sh("ip", "link", "del", veth, check=False)
        sh("ip", "link", "del", self.bridge, check=False)
        if self.forward_rule:
            sh("iptables", "-D", *self.forward_rule, check=False)
            self.forward_rule = None
        self.made = False


class NetnsCluster(Cluster):
    """A `cluster.Cluster` whose node i runs in host i's namespace at its own address, every
    node on ports 9092 / 9093."""

    def __init__(self, hosts, extra_args=(), extra_env=None):
        super().__init__(hosts.n, extra_args, extra_env=extra_env)
        self.hosts = hosts

    def make_nodes(self, root, client_port, free):
        return [Node(i, root, CLIENT_PORT, CONTROLLER_PORT, host=self.hosts.address(i),
                     wrap=["ip", "netns", "exec", self.hosts.namespace(i)])
                for i in range(1, self.n + 1)]
