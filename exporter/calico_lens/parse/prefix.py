"""Match the text before ``IN=`` against the FelixConfiguration ``logPrefix`` template.

Felix renders a Log rule as ``-j LOG --log-prefix "<prefix>: "`` (nftables: ``log prefix``).
The template may hold ``%t`` (tier), ``%k`` (kind, short code), ``%n`` (name) and ``%p``
(``namespace/name``). iptables keeps only 29 characters of the prefix, so a long one is cut and
runs straight into ``IN=``; such a head still tells us whatever its first 29 characters hold.
Matching is done once per distinct head and cached by the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IPTABLES_PREFIX_MAX = 29  # xt_LOG keeps 29 characters plus the terminating NUL

# Short kind codes Felix puts in %k, and what they stand for.
KIND_CODES: dict[str, str] = {
    "np": "NetworkPolicy",
    "gnp": "GlobalNetworkPolicy",
    "snp": "StagedNetworkPolicy",
    "sgnp": "StagedGlobalNetworkPolicy",
    "sknp": "StagedKubernetesNetworkPolicy",
    "knp": "KubernetesNetworkPolicy",
    "kcnp": "KubernetesClusterNetworkPolicy",
    "pro": "Profile",
}
GLOBAL_KINDS = frozenset({"gnp", "sgnp", "kcnp", "pro"})

_NAME = r"[A-Za-z0-9_.\-]+"
_FIELDS: dict[str, tuple[str, str]] = {
    "t": ("tier", _NAME),
    "k": ("kind", r"[a-z]+"),
    "n": ("name", _NAME),
    "p": ("nsname", rf"{_NAME}(?:/{_NAME})?/?"),
}
_PLACEHOLDER = re.compile(r"%([tknp%])")


class TemplateError(ValueError):
    """The logPrefix template cannot be used."""


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """What a log prefix tells about the policy that logged the packet."""

    tier: str = ""
    kind: str = ""  # short code, e.g. "gnp"; "" when the template has no %k or it was cut
    namespace: str = ""
    name: str = ""
    truncated: bool = False  # the prefix was cut at 29 characters


def _tokens(template: str) -> list[tuple[str, str]]:
    """Split a template into ("lit", text) and ("field", key) tokens; ": " ends every prefix."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            out.append(("lit", template[pos : m.start()]))
        if m.group(1) == "%":
            out.append(("lit", "%"))
        else:
            out.append(("field", m.group(1)))
        pos = m.end()
    if pos < len(template):
        out.append(("lit", template[pos:]))
    out.append(("lit", ": "))
    # Merge neighbouring literals so partial matching sees one literal.
    merged: list[tuple[str, str]] = []
    for kind, val in out:
        if merged and kind == "lit" and merged[-1][0] == "lit":
            merged[-1] = ("lit", merged[-1][1] + val)
        else:
            merged.append((kind, val))
    return merged


def _field_rx(key: str, seen: set[str]) -> str:
    group, pat = _FIELDS[key]
    if group in seen:  # the same field twice: second occurrence need not be captured
        return f"(?:{pat})"
    seen.add(group)
    return f"(?P<{group}>{pat})"


def _full_regex(tokens: list[tuple[str, str]]) -> str:
    seen: set[str] = set()
    parts = [re.escape(v) if k == "lit" else _field_rx(v, seen) for k, v in tokens]
    return "".join(parts)


def _cut_regex(tokens: list[tuple[str, str]], i: int, seen: set[str]) -> str:
    """A regex matching any non-empty beginning of tokens[i:] (the text may stop anywhere)."""
    kind, val = tokens[i]
    rest = f"(?:{_cut_regex(tokens, i + 1, seen)})?" if i + 1 < len(tokens) else ""
    if kind == "field":
        return _field_rx(val, seen) + rest
    shorter = "|".join(re.escape(val[:j]) for j in range(len(val) - 1, 0, -1))
    full = re.escape(val) + rest
    return f"(?:{full}|{shorter})" if shorter else full


class PrefixMatcher:
    """Matches heads (the text between any wrapper and ``IN=``) against one template."""

    def __init__(self, template: str, max_len: int = IPTABLES_PREFIX_MAX) -> None:
        if not template or not template.strip():
            raise TemplateError("log_prefix must not be empty (Felix's default is 'calico-packet')")
        bad = re.findall(r"%[^tknp%]", template)
        if bad:
            raise TemplateError(
                f"log_prefix {template!r} holds {', '.join(bad)}; allowed placeholders are "
                "%t (tier), %k (kind), %n (name), %p (namespace/name)"
            )
        self.template = template
        self.max_len = max_len
        tokens = _tokens(template)
        self._full = re.compile(r"(?<![^\s\];>])" + _full_regex(tokens) + r"\Z")
        self._cut = re.compile(_cut_regex(tokens, 0, set()))
        self.has_policy = any(k == "field" and v in "np" for k, v in tokens)

    def match(self, head: str) -> PrefixInfo | None:
        """PrefixInfo for a Calico head, or None when the head is not this template's."""
        m = self._full.search(head)
        if m is not None:
            return _info(m.groupdict(), truncated=False)
        if len(head) < self.max_len:
            return None
        tail = head[-self.max_len :]
        if len(head) > self.max_len and head[-self.max_len - 1] not in " \t];>":
            return None
        m = self._cut.fullmatch(tail)
        if m is None:
            return None
        return _info(m.groupdict(), truncated=True)


def _info(groups: dict[str, str | None], truncated: bool) -> PrefixInfo:
    tier = groups.get("tier") or ""
    kind = groups.get("kind") or ""
    name = groups.get("name") or ""
    namespace = ""
    nsname = groups.get("nsname") or ""
    if nsname:
        if "/" in nsname:
            namespace, _, pname = nsname.partition("/")
        elif truncated and kind and kind not in GLOBAL_KINDS:
            namespace, pname = nsname, ""  # cut inside the namespace of a namespaced policy
        else:
            pname = nsname
        name = name or pname
    if kind and kind not in KIND_CODES:
        # A cut kind ("gn") or an unknown code: keep it only if it is a known code's beginning.
        kind = ""
    return PrefixInfo(tier=tier, kind=kind, namespace=namespace, name=name, truncated=truncated)
