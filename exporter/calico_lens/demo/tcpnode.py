"""The demo's small real node, so that the TCP board shows real kernel numbers.

With root, ``calico-lens demo`` builds two pods in network namespaces on this machine's kernel (the
node harness, ``demo/node.py``): ``shop/loadgen`` streams data to ``shop/cache`` through a token
bucket (real queueing delay, so real RTT) with 3 % random loss on the way in (real
retransmissions); every few seconds it also knocks on a port that answers with a reset and on one
whose SYNs a firewall drops (failed and unreplied connections). The agent reads the pods' TCP
counters, sockets and the node's conntrack table as it would on a cluster node. Everything is
removed on exit.
"""

from __future__ import annotations

import threading

from calico_lens.demo.node import Node, check_privileges, run

SOURCE, SINK = "loadgen-0", "cache-0"
PORT, REFUSED, SILENT = 8080, 7777, 9999


class DemoNode:
    """Raises PrivilegeError (one line saying what is missing) where it cannot be built."""

    def __init__(self) -> None:
        check_privileges()
        self.node = Node("iptables")  # namespaces cl-<random>-…: two demos never collide
        self._stop = threading.Event()
        try:
            self.node.add_pod(SOURCE, "shop", "loadgen", owner_kind="StatefulSet")
            self.node.add_pod(SINK, "shop", "cache", owner_kind="StatefulSet")
            sink_if, sink_ns = self.node.pods[SINK].iface, self.node.pods[SINK].netns
            run("tc", "qdisc", "add", "dev", sink_if, "root", "tbf", "rate", "8mbit", "burst", "16kb",
                "latency", "50ms", ns=self.node.node_ns)
            run("iptables", "-I", "FORWARD", "1", "-o", sink_if, "-m", "statistic", "--mode", "random",
                "--probability", "0.03", "-j", "DROP", ns=self.node.node_ns)
            run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(SILENT), "--syn", "-j", "DROP", ns=sink_ns)
            self.node.serve_tcp(SINK, PORT, sink=True)
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._traffic, name="demo-node-traffic", daemon=True)
        self._thread.start()

    def _traffic(self) -> None:
        while not self._stop.is_set():
            bulk = self.node.send_bulk(SOURCE, SINK, PORT, 4_000_000)  # ~4 s at 8 Mbit/s: the queue stays full
            for port in (REFUSED, SILENT):
                self.node.tcp_connect(SOURCE, SINK, port)
            while bulk.poll() is None and not self._stop.wait(0.5):
                pass
            if bulk.poll() is None:
                bulk.kill()
            bulk.wait()

    def objects(self) -> list[dict]:
        """The pods as the Kubernetes API would list them, for the demo's cluster snapshot."""
        return [self.node.pod_object(p) for p in self.node.pods.values()]

    def agent_settings(self) -> dict:
        """What the agent needs to read this node: TCP stats of the pods and the node's conntrack."""
        return {"tcp_stats": True, "conntrack": True, "tcp_interval": 5.0, "unreplied_after": 2.0,
                "conntrack_netns": f"/var/run/netns/{self.node.node_ns}"}

    def close(self) -> None:
        self._stop.set()
        if getattr(self, "_thread", None) is not None:
            self._thread.join(10)
        self.node.stop_servers()
        self.node.close()
