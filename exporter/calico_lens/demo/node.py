"""A Calico-like node on this machine's real kernel, for end-to-end tests and corpus capture.

Layout (as Felix lays out a node):
- a *node* network namespace acting as the host, with IP forwarding;
- one namespace per pod, joined to the node by a veth pair whose host end is named ``cali…``,
  MAC ee:ee:ee:ee:ee:ee, proxy ARP on, a /32 (and /128) route per pod; inside the pod the
  default routes go via 169.254.1.1 and fe80::ecee:eeff:feee:eeee, as with Calico;
- "external" namespaces behind a plain ``ext…`` interface (not a workload);
- Felix-style policy rules in the node's FORWARD path: established traffic accepted first, then
  per workload interface a policy chain holding a LOG rule followed by the Allow (ACCEPT) or Deny
  (DROP) rule it belongs to, for the iptables or the nftables dataplane;
- ``net.netfilter.nf_log_all_netns=1`` and ``nf_conntrack_acct=1`` while it runs, restored after.

Addresses come from 198.18.0.0/15 and fd00:198:18::/64; no namespace has a route out.
Everything is removed by ``close()`` (also used as a context manager), even after failures.

Run by hand:  sudo .venv/bin/python -m calico_lens.demo.node --help
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

NS_PREFIX = "cl-"  # every namespace this harness makes starts with it (the cleanup test looks)
SYSCTLS = {"net/netfilter/nf_log_all_netns": "1", "net/netfilter/nf_conntrack_acct": "1"}
IPTABLES_PREFIX_MAX = 29
GW4 = "169.254.1.1"
GW6 = "fe80::ecee:eeff:feee:eeee"
HOST_MAC = "ee:ee:ee:ee:ee:ee"


class PrivilegeError(RuntimeError):
    pass


def check_privileges() -> None:
    """Raise PrivilegeError with one clear line when the node cannot be built here."""
    missing = [t for t in ("ip", "iptables", "nft") if shutil.which(t) is None]
    if missing:
        raise PrivilegeError(f"node harness needs {', '.join(missing)} (run `make setup`)")
    if os.geteuid() != 0:
        raise PrivilegeError("node harness needs root (network namespaces, netfilter rules, /dev/kmsg): "
                             "run the suite as root, e.g. `sudo make test`")
    if not os.path.exists("/proc/sys/net/netfilter/nf_log_all_netns"):
        raise PrivilegeError("node harness needs net.netfilter.nf_log_all_netns (netfilter logging) in this kernel")


# Helpers run in their own session: a Ctrl-C at the terminal reaches only the demo or test, which
# stops them in order (traffic, then servers), instead of each dying with a traceback mid-connection.
OWN_SESSION = {"start_new_session": True}


def run(*cmd: str, ns: str | None = None, check: bool = True, input: str | None = None) -> str:
    full = (["ip", "netns", "exec", ns, *cmd] if ns else list(cmd))
    p = subprocess.run(full, capture_output=True, text=True, input=input, **OWN_SESSION)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def felix_prefix(template: str, tier: str, kind: str, namespace: str, name: str) -> str:
    """Render a FelixConfiguration logPrefix the way Felix does (before any cut)."""
    nsname = f"{namespace}/{name}" if namespace else name
    return (template.replace("%t", tier).replace("%k", kind).replace("%p", nsname).replace("%n", name)) + ": "


@dataclass
class Pod:
    name: str
    namespace: str
    workload: str
    ip4: str
    ip6: str
    netns: str
    iface: str  # host-side cali… name
    labels: dict[str, str] = field(default_factory=dict)
    owner_kind: str = "ReplicaSet"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    pause: subprocess.Popen | None = None  # the pod's "pause" process, in the pod's cgroup
    cgroup: str = ""


@dataclass
class External:
    name: str
    ip4: str
    ip6: str
    netns: str
    iface: str


@dataclass
class Rule:
    """One Felix policy rule pair: Log, then the verdict, for traffic to or from one pod."""

    policy: str  # name
    namespace: str  # "" for a global policy
    kind: str  # np | gnp
    tier: str
    direction: str  # ingress (to the pod) | egress (from the pod)
    pod: Pod
    action: str  # allow | deny
    protocol: str = ""  # tcp | udp | icmp | icmpv6 | "" (any)
    port: int = 0


def _iface_name(kind: str, key: str) -> str:
    return (kind + hashlib.sha1(key.encode()).hexdigest())[:15]


class Node:
    def __init__(self, dataplane: str = "iptables", log_prefix: str = "calico-packet", tag: str = ""):
        if dataplane not in ("iptables", "nftables"):
            raise ValueError("dataplane must be iptables or nftables")
        check_privileges()
        self.dataplane = dataplane
        self.log_prefix = log_prefix
        self.tag = tag or uuid.uuid4().hex[:6]
        self.node_ns = f"{NS_PREFIX}{self.tag}-node"
        self.pods: dict[str, Pod] = {}
        self.externals: dict[str, External] = {}
        self.rules: list[Rule] = []
        self._namespaces: list[str] = []
        self._saved_sysctls: dict[str, str] = {}
        self._n = 0
        try:
            self._setup_node()
        except BaseException:
            self.close()
            raise

    # --- lifecycle -------------------------------------------------------------------------------
    def _add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._namespaces.append(name)
        run("ip", "link", "set", "lo", "up", ns=name)

    def _setup_node(self) -> None:
        for key, value in SYSCTLS.items():
            path = f"/proc/sys/{key}"
            with open(path) as fh:
                self._saved_sysctls[path] = fh.read().strip()
            with open(path, "w") as fh:
                fh.write(value)
        self._add_ns(self.node_ns)
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                    "net.netfilter.nf_conntrack_acct=1"):  # per network namespace
            run("sysctl", "-qw", key, ns=self.node_ns)
        # Like Felix: established traffic is accepted first; then the source workload's egress
        # policy (an allow returns and goes on), then the destination workload's ingress policy.
        if self.dataplane == "iptables":
            for tool in ("iptables", "ip6tables"):
                run(tool, "-N", "cali-from-wl", ns=self.node_ns)
                run(tool, "-N", "cali-to-wl", ns=self.node_ns)
                run(tool, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT",
                    ns=self.node_ns)
                run(tool, "-A", "FORWARD", "-j", "cali-from-wl", ns=self.node_ns)
                run(tool, "-A", "FORWARD", "-j", "cali-to-wl", ns=self.node_ns)
        else:
            run("nft", "-f", "-", ns=self.node_ns, input=(
                "table inet calico {\n"
                " chain from_wl { }\n chain to_wl { }\n"
                " chain forward { type filter hook forward priority 0; policy accept;\n"
                "  ct state established,related accept\n  jump from_wl\n  jump to_wl\n }\n"
                "}\n"))

    def _stop_pause(self, pod: Pod) -> None:
        if pod.pause is not None:
            pod.pause.kill()
            pod.pause.wait()
            pod.pause = None
        if pod.cgroup:
            with contextlib.suppress(OSError):
                os.rmdir(pod.cgroup)
            pod.cgroup = ""

    def remove_pod(self, name: str) -> Pod:
        """Delete a pod the way the kubelet does: its processes, cgroup and network namespace go."""
        pod = self.pods.pop(name)
        self._stop_pause(pod)
        run("ip", "netns", "del", pod.netns)
        self._namespaces.remove(pod.netns)
        return pod

    def close(self) -> None:
        self.stop_servers()
        for pod in self.pods.values():
            self._stop_pause(pod)
        for name in reversed(self._namespaces):
            run("ip", "netns", "del", name, check=False)
        self._namespaces.clear()
        for path, value in self._saved_sysctls.items():
            with contextlib.suppress(OSError), open(path, "w") as fh:
                fh.write(value)
        self._saved_sysctls.clear()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- topology --------------------------------------------------------------------------------
    def _next(self) -> int:
        self._n += 1
        return self._n

    def add_pod(self, name: str, namespace: str, workload: str = "", labels: dict[str, str] | None = None,
                owner_kind: str = "ReplicaSet") -> Pod:
        n = self._next()
        netns = f"{NS_PREFIX}{self.tag}-p{n}"
        iface = _iface_name("cali", f"{self.tag}/{namespace}/{name}")
        pod = Pod(name, namespace, workload or name, f"198.18.0.{n}", f"fd00:198:18::{n:x}", netns, iface,
                  labels or {"app": workload or name}, owner_kind)
        self._add_ns(netns)
        run("ip", "link", "add", iface, "netns", self.node_ns, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        run("ip", "link", "set", iface, "address", HOST_MAC, ns=self.node_ns)
        run("sysctl", "-qw", f"net.ipv4.conf.{iface}.proxy_arp=1", ns=self.node_ns)
        run("sysctl", "-qw", f"net.ipv6.conf.{iface}.accept_dad=0", ns=self.node_ns)
        run("ip", "link", "set", iface, "up", ns=self.node_ns)
        run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", ns=netns)
        run("ip", "addr", "add", f"{pod.ip4}/32", "dev", "eth0", ns=netns)
        run("ip", "addr", "add", f"{pod.ip6}/128", "dev", "eth0", "nodad", ns=netns)
        run("ip", "link", "set", "eth0", "up", ns=netns)
        run("ip", "route", "add", GW4, "dev", "eth0", ns=netns)
        # Calico answers the pod's ARP for 169.254.1.1 by proxy ARP through its default route; a
        # node namespace has no default route, so give the pod the gateway's MAC directly.
        run("ip", "neigh", "add", GW4, "lladdr", HOST_MAC, "dev", "eth0", "nud", "permanent", ns=netns)
        run("ip", "route", "add", "default", "via", GW4, "dev", "eth0", ns=netns)
        run("ip", "-6", "route", "add", "default", "via", GW6, "dev", "eth0", ns=netns)
        run("ip", "route", "add", f"{pod.ip4}/32", "dev", iface, ns=self.node_ns)
        run("ip", "-6", "route", "add", f"{pod.ip6}/128", "dev", iface, ns=self.node_ns)
        self.pods[name] = pod
        self._wait_link6(netns)
        self._start_pause(pod)
        return pod

    def _start_pause(self, pod: Pod) -> None:
        """A long-lived process in the pod's network namespace, in a kubelet-style cgroup
        (…/kubepods/besteffort/pod<uid>/), as the agent finds pods on a real node."""
        pod.pause = subprocess.Popen(["ip", "netns", "exec", pod.netns, "sleep", "infinity"])
        root = next((r for r in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")
                     if os.path.isdir(r)), "")
        if root:
            path = os.path.join(root, "kubepods", "besteffort", f"pod{pod.uid}")
            try:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, "cgroup.procs"), "w") as fh:
                    fh.write(str(pod.pause.pid))
                pod.cgroup = path
            except OSError:
                pod.cgroup = ""

    def add_external(self, name: str) -> External:
        """A host outside the cluster (e.g. 'the internet' or a partner network), not a workload."""
        n = self._next()
        netns = f"{NS_PREFIX}{self.tag}-x{n}"
        iface = _iface_name("ext", f"{self.tag}/{name}")
        ext = External(name, f"198.19.{n}.1", f"fd00:198:19::{n:x}", netns, iface)
        self._add_ns(netns)
        run("ip", "link", "add", iface, "netns", self.node_ns, "type", "veth", "peer", "name", "eth0",
            "netns", netns)
        run("sysctl", "-qw", f"net.ipv6.conf.{iface}.accept_dad=0", ns=self.node_ns)
        run("sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0", ns=netns)
        run("ip", "addr", "add", f"198.19.{n}.254/24", "dev", iface, ns=self.node_ns)
        run("ip", "addr", "add", f"fd00:198:19::{n:x}:fe/112", "dev", iface, "nodad", ns=self.node_ns)
        run("ip", "link", "set", iface, "up", ns=self.node_ns)
        run("ip", "addr", "add", f"{ext.ip4}/24", "dev", "eth0", ns=netns)
        run("ip", "addr", "add", f"{ext.ip6}/128", "dev", "eth0", "nodad", ns=netns)
        run("ip", "link", "set", "eth0", "up", ns=netns)
        run("ip", "route", "add", "default", "via", f"198.19.{n}.254", ns=netns)
        run("ip", "-6", "route", "add", f"fd00:198:19::{n:x}:fe", "dev", "eth0", ns=netns)
        run("ip", "-6", "route", "add", "default", "via", f"fd00:198:19::{n:x}:fe", ns=netns)
        run("ip", "-6", "route", "add", f"{ext.ip6}/128", "dev", iface, ns=self.node_ns)
        self.externals[name] = ext
        return ext

    def _wait_link6(self, netns: str) -> None:
        for _ in range(50):
            if "tentative" not in run("ip", "-6", "addr", ns=netns):
                return
            time.sleep(0.05)

    # --- policy rules ----------------------------------------------------------------------------
    def prefix_for(self, rule: Rule) -> str:
        full = felix_prefix(self.log_prefix, rule.tier, rule.kind, rule.namespace, rule.policy)
        return full[:IPTABLES_PREFIX_MAX] if self.dataplane == "iptables" else full

    def add_rule(self, rule: Rule) -> None:
        """Install Log + verdict for a pod, the way Felix renders a policy rule pair."""
        self.rules.append(rule)
        prefix = self.prefix_for(rule)
        if self.dataplane == "iptables":
            self._iptables_rule(rule, prefix)
        else:
            self._nft_rule(rule, prefix)

    def _iptables_rule(self, rule: Rule, prefix: str) -> None:
        side = ["-o", rule.pod.iface] if rule.direction == "ingress" else ["-i", rule.pod.iface]
        families = {"icmp": ["iptables"], "icmpv6": ["ip6tables"]}.get(rule.protocol, ["iptables", "ip6tables"])
        for tool in families:
            match: list[str] = []
            if rule.protocol:
                match = ["-p", "ipv6-icmp" if rule.protocol == "icmpv6" else rule.protocol]
                if rule.port:
                    match += ["--dport", str(rule.port)]
            chain = "cali-to-wl" if rule.direction == "ingress" else "cali-from-wl"
            allow = "ACCEPT" if rule.direction == "ingress" else "RETURN"
            base = [tool, "-A", chain, *side, *match]
            run(*base, "-j", "LOG", "--log-prefix", prefix, "--log-level", "5", ns=self.node_ns)
            run(*base, "-j", allow if rule.action == "allow" else "DROP", ns=self.node_ns)

    def _nft_rule(self, rule: Rule, prefix: str) -> None:
        side = f'oifname "{rule.pod.iface}"' if rule.direction == "ingress" else f'iifname "{rule.pod.iface}"'
        match = ""
        if rule.protocol == "icmp":
            match = "meta l4proto icmp"
        elif rule.protocol == "icmpv6":
            match = "meta l4proto ipv6-icmp"
        elif rule.protocol:
            match = f"meta l4proto {rule.protocol}" + (f" th dport {rule.port}" if rule.port else "")
        chain = "to_wl" if rule.direction == "ingress" else "from_wl"
        allow = "accept" if rule.direction == "ingress" else "return"
        verdict = allow if rule.action == "allow" else "drop"
        escaped = prefix.replace('"', '\\"')
        run("nft", "add", "rule", "inet", "calico", chain, *side.split(), *match.split(), "log", "prefix",
            f'"{escaped}"', "level", "notice", ns=self.node_ns)
        run("nft", "add", "rule", "inet", "calico", chain, *side.split(), *match.split(), verdict,
            ns=self.node_ns)

    # --- traffic ---------------------------------------------------------------------------------
    def netns_of(self, name: str) -> str:
        return self.pods[name].netns if name in self.pods else self.externals[name].netns

    def address_of(self, name: str, family: int = 4) -> str:
        target = self.pods.get(name) or self.externals[name]
        return target.ip4 if family == 4 else target.ip6

    def serve_tcp(self, name: str, port: int, sink: bool = False, reply: int = 0) -> subprocess.Popen:
        """A tiny TCP server in a namespace, dual-stack: accepts and closes, or (sink) reads
        everything a client sends, then sends ``reply`` bytes back and closes."""
        handle = (" c,_=s.accept();c.close()\n" if not sink else
                  " c,_=s.accept()\n while c.recv(65536):\n  pass\n"
                  f" c.sendall(b'y'*{reply});c.close()\n")
        code = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET6);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
                f"s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0);s.bind(('::',{port}));s.listen(64)\n"
                "print('ready',flush=True)\n"
                "while True:\n" + handle)
        p = subprocess.Popen(["ip", "netns", "exec", self.netns_of(name), sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True, **OWN_SESSION)
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            p.kill()
            raise RuntimeError(f"node: the TCP server in {name} did not start")
        self._servers = [*getattr(self, "_servers", []), p]
        return p

    def send_bulk(self, src: str, dst: str, port: int, payload: int, hold: float = 0.0) -> subprocess.Popen:
        """Send ``payload`` bytes from ``src`` to ``dst``, half-close, read the reply to the end, hold
        the socket a while; the process prints how many bytes came back."""
        code = (f"import socket,time\ns=socket.create_connection(({self.address_of(dst)!r},{port}))\n"
                f"s.sendall(b'x'*{payload})\ns.shutdown(socket.SHUT_WR)\nn=0\n"
                "while (d:=s.recv(65536)):\n n+=len(d)\n"
                f"time.sleep({hold})\nprint(n)\n")
        return subprocess.Popen(["ip", "netns", "exec", self.netns_of(src), sys.executable, "-c", code],
                                stdout=subprocess.PIPE, text=True, **OWN_SESSION)

    def pod_object(self, pod: Pod, node_name: str = "node-1") -> dict:
        """The Kubernetes Pod object of one of this node's pods, as the API server would list it."""
        if pod.owner_kind == "ReplicaSet":
            rs = pod.name.rsplit("-", 1)[0]
            owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "controller": True, "uid": "u-" + rs}
            labels = {**pod.labels, "pod-template-hash": rs.rsplit("-", 1)[1]}
        else:
            owner = {"apiVersion": "apps/v1", "kind": pod.owner_kind, "name": pod.workload, "controller": True,
                     "uid": "u-" + pod.workload}
            labels = dict(pod.labels)
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod.name, "namespace": pod.namespace, "labels": labels,
                             "ownerReferences": [owner], "uid": pod.uid},
                "spec": {"nodeName": node_name},
                "status": {"phase": "Running", "podIP": pod.ip4, "podIPs": [{"ip": pod.ip4}, {"ip": pod.ip6}]}}

    def _in_ns(self, name: str, code: str) -> str:
        return run(sys.executable, "-c", code, ns=self.netns_of(name))

    def tcp_connect(self, src: str, dst: str, port: int, family: int = 4, timeout: float = 0.6) -> bool:
        """One TCP connection attempt; True when it was accepted. The timeout stays under the 1 s
        SYN retransmission so a dropped attempt logs exactly one SYN."""
        addr = self.address_of(dst, family)
        fam = "AF_INET" if family == 4 else "AF_INET6"
        out = self._in_ns(src, (
            f"import socket\ns=socket.socket(socket.{fam});s.settimeout({timeout})\n"
            f"try:\n s.connect(({addr!r},{port}));print('ok')\nexcept OSError:\n print('fail')\n"))
        return out.strip() == "ok"

    def udp_send(self, src: str, dst: str, port: int, family: int = 4, payload: bytes = b"x") -> None:
        addr = self.address_of(dst, family)
        fam = "AF_INET" if family == 4 else "AF_INET6"
        self._in_ns(src, f"import socket\nsocket.socket(socket.{fam},socket.SOCK_DGRAM).sendto({payload!r},"
                         f"({addr!r},{port}))\n")

    def ping(self, src: str, dst: str, family: int = 4, size: int = 56) -> bool:
        addr = self.address_of(dst, family)
        p = subprocess.run(["ip", "netns", "exec", self.netns_of(src), "ping", "-c1", "-W1", "-s", str(size),
                            "-6" if family == 6 else "-4", addr], capture_output=True)
        return p.returncode == 0

    def raw_send(self, src: str, dst: str, proto: int, payload: bytes, family: int = 4) -> None:
        """A raw IP packet of any protocol number (SCTP, GRE, ...)."""
        addr = self.address_of(dst, family)
        fam = "AF_INET" if family == 4 else "AF_INET6"
        self._in_ns(src, f"import socket\nsocket.socket(socket.{fam},socket.SOCK_RAW,{proto}).sendto({payload!r},"
                         f"({addr!r},0))\n")

    def stop_servers(self) -> None:
        for p in getattr(self, "_servers", []):
            p.kill()
            p.wait()
        self._servers = []


def sctp_init(sport: int, dport: int) -> bytes:
    """An SCTP INIT chunk (enough for the kernel's LOG target to print ports)."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, 1, 65535, 1, 1, 1)
    return struct.pack("!HHII", sport, dport, 0, 0) + chunk


CGROUP_PARENTS = [os.path.join(r, "kubepods", "besteffort")
                  for r in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup")]


def leftovers() -> list[str]:
    """Namespaces and pod cgroups this harness made that still exist (none after close())."""
    out = run("ip", "netns", "list", check=False)
    found = [line.split()[0] for line in out.splitlines() if line.startswith(NS_PREFIX)]
    for parent in CGROUP_PARENTS:
        if os.path.isdir(parent):
            found += [os.path.join(parent, d) for d in os.listdir(parent) if d.startswith("pod")]
    return found


@contextlib.contextmanager
def kmsg_reader() -> Iterator[callable]:
    """Read /dev/kmsg records written after this point; yields a function returning new records."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)

    def read() -> list[str]:
        recs = []
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError:  # EPIPE: records overwritten; keep going
                continue
            if not rec:
                break
            recs.append(rec.decode("utf-8", "replace").split("\n", 1)[0])
        return recs

    try:
        yield read
    finally:
        os.close(fd)


def kmsg_write(text: str) -> None:
    with open("/dev/kmsg", "w") as fh:
        fh.write(text + "\n")


def _main() -> int:
    ap = argparse.ArgumentParser(description="Bring up a Calico-like node in network namespaces and keep it "
                                             "until Ctrl-C; prints what it made.")
    ap.add_argument("--dataplane", choices=("iptables", "nftables"), default="iptables")
    ap.add_argument("--log-prefix", default="calico-packet")
    ap.add_argument("--cleanup", action="store_true", help="only remove namespaces a crashed run left behind")
    ap.add_argument("--snapshot", default="/tmp/calico-lens-node.json", metavar="FILE",
                    help="where to write the node's pods as a kubectl List, for the agent's --snapshot "
                         "(default: %(default)s)")
    args = ap.parse_args()
    if args.cleanup:
        for name in leftovers():
            if name.startswith("/"):
                with contextlib.suppress(OSError):
                    os.rmdir(name)
            else:
                run("ip", "netns", "del", name, check=False)
        print("removed leftovers")
        return 0
    try:
        check_privileges()
    except PrivilegeError as e:
        print(f"node: {e}", file=sys.stderr)
        return 1
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # `kill` and `timeout` remove the node too, as Ctrl-C does
    with Node(args.dataplane, args.log_prefix) as node:
        a = node.add_pod("frontend-7d4b9c6f5-abcde", "shop", "frontend")
        b = node.add_pod("backend-5f6d7c8b9-fghij", "shop", "backend")
        node.add_external("internet")
        node.add_rule(Rule("allow-frontend", "shop", "np", "default", "ingress", b, "allow", "tcp", 8080))
        node.add_rule(Rule("deny-rest", "shop", "np", "default", "ingress", b, "deny"))
        node.serve_tcp(b.name, 8080)
        with open(args.snapshot, "w") as fh:  # JSON is YAML: what `kubectl get pods -A -o yaml` would list
            json.dump({"apiVersion": "v1", "kind": "List", "items": [node.pod_object(p) for p in (a, b)]}, fh)
        print(f"node namespace: {node.node_ns}; pods: {a.netns} ({a.ip4}), {b.netns} ({b.ip4})")
        print(f"agent:  calico-lens agent --source kmsg --log-prefix {args.log_prefix!r} --snapshot {args.snapshot}")
        print(f"try: ip netns exec {a.netns} python3 -c \"import socket;socket.create_connection(('{b.ip4}',8080))\"")
        print("kernel lines appear in `dmesg -w`; Ctrl-C removes everything")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
        node.stop_servers()
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())

