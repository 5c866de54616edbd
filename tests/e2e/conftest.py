"""Fixtures for tests on the real kernel: the node harness, never silently skipped."""

from __future__ import annotations

import pytest
from calico_lens.demo.node import SYSCTLS, Node, PrivilegeError, check_privileges, leftovers


def _sysctls() -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        with open(f"/proc/sys/{key}") as fh:
            out[key] = fh.read().strip()
    return out


@pytest.fixture(scope="session", autouse=True)
def harness_leaves_nothing_behind():
    """After the whole e2e suite: no test namespace remains and the sysctls are as they were."""
    try:
        check_privileges()
    except PrivilegeError:
        yield
        return
    before = _sysctls()
    yield
    assert leftovers() == [], f"namespaces left behind: {leftovers()}"
    assert _sysctls() == before


@pytest.fixture
def make_node():
    """make_node(dataplane, log_prefix) → a Node, removed after the test even when it fails."""
    nodes: list[Node] = []

    def make(dataplane: str = "iptables", log_prefix: str = "calico-packet") -> Node:
        try:
            node = Node(dataplane, log_prefix)
        except PrivilegeError as e:
            pytest.fail(f"node harness unavailable: {e}", pytrace=False)
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        n.stop_servers()
        n.close()
