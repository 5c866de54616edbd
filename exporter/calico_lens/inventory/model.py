"""The policy model: which pods each policy selects, how every pod is protected, and the score.

Pods are the endpoints. A policy *enforces* unless it is staged. For each pod and direction:
- ``default_deny``: an enforcing policy that selects *every* pod of its scope (empty
  podSelector, ``all()`` or an empty selector; a global policy's scope is its namespaceSelector)
  covers the direction and allows nothing in it (no Allow or Pass rule) — new pods are protected
  before anyone writes a rule for them;
- ``isolated``: some enforcing policy selects the pod for that direction (what it does not allow
  is denied), but no default deny covers it;
- ``unprotected``: no policy restricts it: none selects it, or those that do allow (or pass on)
  everything in that direction.

Security score (0–100) = sum of weighted components, each a share between 0 and 1:

| component | weight | share that scores |
|---|---|---|
| ``namespace_ingress_default_deny`` | 25 | namespaces (with pods) whose every pod is ingress ``default_deny`` |
| ``namespace_egress_default_deny`` | 15 | the same for egress |
| ``endpoint_ingress_protection`` | 20 | pods not ``unprotected`` on ingress |
| ``endpoint_egress_protection`` | 10 | pods not ``unprotected`` on egress |
| ``no_allow_all_rules`` | 15 | enforcing policies without an allow-everything rule |
| ``egress_restricted`` | 10 | pods whose egress is neither unprotected nor allowed to anywhere |
| ``no_unused_policies`` | 5 | policies that select at least one pod |

With nothing to measure (no pods, no policies) a share counts as 1. The per-namespace score uses
the same components on that namespace's pods and policies (global policies count where they
select pods). Flow-based inputs (denied traffic, egress to public addresses) are joined in PromQL
by recording rules, not here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from calico_lens.inventory import selectors
from calico_lens.kube.endpoints import workload_of

WEIGHTS: dict[str, float] = {
    "namespace_ingress_default_deny": 25,
    "namespace_egress_default_deny": 15,
    "endpoint_ingress_protection": 20,
    "endpoint_egress_protection": 10,
    "no_allow_all_rules": 15,
    "egress_restricted": 10,
    "no_unused_policies": 5,
}
DIRECTIONS = ("ingress", "egress")
DEFAULT_DENY, ISOLATED, UNPROTECTED = "default_deny", "isolated", "unprotected"
KIND_NAMES = {
    ("projectcalico.org", "NetworkPolicy"): "NetworkPolicy",
    ("projectcalico.org", "GlobalNetworkPolicy"): "GlobalNetworkPolicy",
    ("projectcalico.org", "StagedNetworkPolicy"): "StagedNetworkPolicy",
    ("projectcalico.org", "StagedGlobalNetworkPolicy"): "StagedGlobalNetworkPolicy",
    ("projectcalico.org", "StagedKubernetesNetworkPolicy"): "StagedKubernetesNetworkPolicy",
    ("networking.k8s.io", "NetworkPolicy"): "KubernetesNetworkPolicy",
}
STAGED = {"StagedNetworkPolicy", "StagedGlobalNetworkPolicy", "StagedKubernetesNetworkPolicy"}
GLOBAL = {"GlobalNetworkPolicy", "StagedGlobalNetworkPolicy"}


@dataclass
class Pod:
    namespace: str
    name: str
    workload: str
    labels: dict[str, str]
    sa_labels: dict[str, str]
    ns_labels: dict[str, str]


@dataclass
class Policy:
    kind: str
    namespace: str  # "" for global kinds
    name: str
    tier: str
    order: str
    types: tuple[str, ...]
    rules: dict[str, list[dict]]
    error: str = ""
    selected: list[Pod] = field(default_factory=list)
    selects_all_in_scope: bool = False

    @property
    def enforcing(self) -> bool:
        return self.kind not in STAGED and not self.error

    def allows_in(self, direction: str) -> bool:
        return any(r.get("action") in ("Allow", "Pass") for r in self.rules.get(direction, []))

    def allow_all(self, direction: str) -> bool:
        return any(_unconditional(r, "Allow") for r in self.rules.get(direction, []))

    def isolates(self, direction: str) -> bool:
        """Selecting a pod isolates it, unless the policy lets everything through in that direction
        (an unconditional Allow) or passes everything on (a Log-then-Pass audit policy)."""
        if direction.capitalize() not in self.types:
            return False
        return not any(_unconditional(r, "Pass") or _unconditional(r, "Allow") for r in self.rules.get(direction, []))


def _unconditional(rule: dict, action: str) -> bool:
    """A rule with this action and no constraint at all (nets 0.0.0.0/0 or ::/0 count as none)."""
    if rule.get("action") != action:
        return False
    constraints = ("protocol", "notProtocol", "icmp", "notICMP", "ipVersion", "http")
    if any(rule.get(k) for k in constraints):
        return False
    for side in ("source", "destination"):
        ent = rule.get(side) or {}
        if any(v for k, v in ent.items() if k != "nets" or v not in (["0.0.0.0/0"], ["::/0"],
                                                                     ["0.0.0.0/0", "::/0"])):
            return False
    return True


def _k8s_rules(spec: dict, direction: str) -> list[dict]:
    """Kubernetes NetworkPolicy rules in Calico's shape (every rule allows)."""
    out = []
    for r in spec.get(direction) or []:
        peers = r.get("from" if direction == "ingress" else "to") or []
        ports = r.get("ports") or []
        rule: dict = {"action": "Allow"}
        if peers:
            rule["source" if direction == "ingress" else "destination"] = {"selector": "k8s-peers"}
        if ports:
            rule["protocol"] = "TCP"
        out.append(rule)
    return out


def _types(spec: dict, kubernetes_style: bool) -> tuple[str, ...]:
    given = spec.get("policyTypes" if kubernetes_style else "types")
    if given:
        return tuple(str(t) for t in given)
    # Both Calico and Kubernetes default to Ingress, plus Egress when egress rules are present.
    return ("Ingress", "Egress") if spec.get("egress") else ("Ingress",)


class Model:
    def __init__(self, objects: dict[str, list[dict]]):
        """objects: resource key → raw objects (as kubectl prints them)."""
        self.namespaces: dict[str, dict[str, str]] = {}
        for o in objects.get("namespaces", []):
            meta = o.get("metadata") or {}
            self.namespaces[meta.get("name", "")] = dict(meta.get("labels") or {})
        sas = {((o.get("metadata") or {}).get("namespace", ""), (o.get("metadata") or {}).get("name", "")):
               dict((o.get("metadata") or {}).get("labels") or {}) for o in objects.get("serviceaccounts", [])}
        self.pods: list[Pod] = []
        for p in objects.get("pods", []):
            meta, spec, status = p.get("metadata") or {}, p.get("spec") or {}, p.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed") or spec.get("hostNetwork"):
                continue  # finished pods and host-network pods are not workload endpoints
            ns = meta.get("namespace", "")
            sa = spec.get("serviceAccountName") or "default"
            self.pods.append(Pod(ns, meta.get("name", ""), workload_of(p), dict(meta.get("labels") or {}),
                                 sas.get((ns, sa), {}), self.namespaces.get(ns, {})))
            self.namespaces.setdefault(ns, {})
        self.policies: list[Policy] = []
        for key in ("calico_networkpolicies", "calico_globalnetworkpolicies", "calico_stagednetworkpolicies",
                    "calico_stagedglobalnetworkpolicies", "calico_stagedkubernetesnetworkpolicies",
                    "networkpolicies"):
            for obj in objects.get(key, []):
                self.policies.append(self._policy(obj))
        self.protection = self._protect()

    def _policy(self, obj: dict) -> Policy:
        api = obj.get("apiVersion", "")
        group = api.split("/")[0] if "/" in api else ""
        group = "projectcalico.org" if group == "crd.projectcalico.org" else group
        kind = KIND_NAMES.get((group, obj.get("kind", "")), obj.get("kind", ""))
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        k8s_style = kind in ("KubernetesNetworkPolicy", "StagedKubernetesNetworkPolicy")
        if k8s_style:
            spec = spec if kind == "KubernetesNetworkPolicy" else (spec or {})
        namespace = "" if kind in GLOBAL else meta.get("namespace", "")
        tier = "" if k8s_style else (spec.get("tier") or "default")
        order = "" if spec.get("order") is None else str(spec.get("order"))
        rules = ({d: _k8s_rules(spec, d) for d in DIRECTIONS} if k8s_style
                 else {d: [r for r in (spec.get(d) or []) if isinstance(r, dict)] for d in DIRECTIONS})
        pol = Policy(kind, namespace, meta.get("name", ""), tier, order, _types(spec, k8s_style), rules)
        try:
            if k8s_style:
                pod_sel = spec.get("podSelector") or {}
                pred = selectors.kubernetes(pod_sel)
                pol.selects_all_in_scope = not pod_sel.get("matchLabels") and not pod_sel.get("matchExpressions")
                pol.selected = [p for p in self.pods if p.namespace == namespace and pred(p.labels)]
            else:
                sel_text = (spec.get("selector") or "").strip()
                pred = selectors.calico(sel_text)
                sa_pred = selectors.calico(spec.get("serviceAccountSelector") or "")
                ns_text = spec.get("namespaceSelector") if kind in GLOBAL else None
                ns_pred = selectors.calico(ns_text or "")
                # Every pod of the namespaces it covers (a global policy's namespaceSelector is its scope).
                pol.selects_all_in_scope = sel_text in ("", "all()") and not spec.get("serviceAccountSelector")
                pol.selected = [p for p in self.pods
                                if (kind in GLOBAL or p.namespace == namespace) and ns_pred(p.ns_labels)
                                and pred(p.labels) and sa_pred(p.sa_labels)]
        except selectors.SelectorError as e:
            pol.error = str(e)
            pol.selected = []
        return pol

    def _protect(self) -> dict[tuple[str, str], dict[str, str]]:
        """(namespace, pod) → {direction: default_deny | isolated | unprotected}."""
        state: dict[tuple[str, str], dict[str, str]] = {(p.namespace, p.name): {d: UNPROTECTED for d in DIRECTIONS}
                                                         for p in self.pods}
        for pol in self.policies:
            if not pol.enforcing:
                continue
            for d in DIRECTIONS:
                if not pol.isolates(d):
                    continue
                deny_all = pol.selects_all_in_scope and not pol.allows_in(d)
                for p in pol.selected:
                    cur = state[(p.namespace, p.name)]
                    if deny_all:
                        cur[d] = DEFAULT_DENY
                    elif cur[d] == UNPROTECTED:
                        cur[d] = ISOLATED
        return state

    # --- what the metrics show -------------------------------------------------------------------
    def namespace_isolation(self) -> dict[tuple[str, str], int]:
        out = {}
        for ns in sorted(self.namespaces):
            pods = [p for p in self.pods if p.namespace == ns]
            for d in DIRECTIONS:
                if pods:
                    out[(ns, d)] = int(all(self.protection[(p.namespace, p.name)][d] == DEFAULT_DENY for p in pods))
                else:  # no pods yet: is there a namespace-wide default deny waiting for them?
                    out[(ns, d)] = int(any(
                        pol.enforcing and pol.selects_all_in_scope and d.capitalize() in pol.types
                        and not pol.allows_in(d) and (pol.namespace == ns or pol.kind in GLOBAL)
                        for pol in self.policies))
        return out

    def endpoint_counts(self) -> Counter[tuple[str, str, str]]:
        c: Counter[tuple[str, str, str]] = Counter()
        for p in self.pods:
            st = self.protection[(p.namespace, p.name)]
            c[(p.namespace, st["ingress"], st["egress"])] += 1
        return c

    def _components(self, pods: list[Pod], policies: list[Policy], namespaces: list[str]) -> dict[str, float]:
        def share(good: int, total: int) -> float:
            return 1.0 if total == 0 else good / total

        iso = self.namespace_isolation()
        with_pods = [ns for ns in namespaces if any(p.namespace == ns for p in pods)]
        prot = [self.protection[(p.namespace, p.name)] for p in pods]
        enforcing = [pol for pol in policies if pol.enforcing]
        open_egress = {(p.namespace, p.name) for pol in enforcing
                       if "Egress" in pol.types and pol.allow_all("egress") for p in pol.selected}
        return {
            "namespace_ingress_default_deny": share(sum(iso[(ns, "ingress")] for ns in with_pods), len(with_pods)),
            "namespace_egress_default_deny": share(sum(iso[(ns, "egress")] for ns in with_pods), len(with_pods)),
            "endpoint_ingress_protection": share(sum(s["ingress"] != UNPROTECTED for s in prot), len(prot)),
            "endpoint_egress_protection": share(sum(s["egress"] != UNPROTECTED for s in prot), len(prot)),
            "no_allow_all_rules": share(sum(not (pol.allow_all("ingress") or pol.allow_all("egress"))
                                            for pol in enforcing), len(enforcing)),
            "egress_restricted": share(sum(s["egress"] != UNPROTECTED and (p.namespace, p.name) not in open_egress
                                           for p, s in zip(pods, prot, strict=True)), len(pods)),
            "no_unused_policies": share(sum(bool(pol.selected) for pol in policies if not pol.error),
                                        sum(1 for pol in policies if not pol.error)),
        }

    def components(self) -> dict[str, float]:
        return self._components(self.pods, self.policies, sorted(self.namespaces))

    def score(self, components: dict[str, float] | None = None) -> float:
        comp = self.components() if components is None else components
        return round(sum(WEIGHTS[k] * v for k, v in comp.items()), 1)

    def namespace_scores(self) -> dict[str, float]:
        out = {}
        for ns in sorted(self.namespaces):
            pods = [p for p in self.pods if p.namespace == ns]
            pols = [pol for pol in self.policies if pol.namespace == ns or (pol.kind in GLOBAL and any(
                p.namespace == ns for p in pol.selected))]
            out[ns] = self.score(self._components(pods, pols, [ns]))
        return out

    def recommendations(self) -> list[tuple[str, str, str, str]]:
        """(namespace, check, severity, message) for every open finding."""
        out = []
        iso = self.namespace_isolation()
        for ns in sorted(self.namespaces):
            if not any(p.namespace == ns for p in self.pods):
                continue
            if not iso[(ns, "ingress")]:
                out.append((ns, "namespace_default_deny_ingress", "high",
                            f"namespace {ns} has no default-deny ingress policy"))
            if not iso[(ns, "egress")]:
                out.append((ns, "namespace_default_deny_egress", "medium",
                            f"namespace {ns} has no default-deny egress policy"))
        seen: set[tuple[str, str, str]] = set()
        for p in self.pods:
            st = self.protection[(p.namespace, p.name)]
            for d, check, sev, msg in (("ingress", "workload_open_ingress", "high", "accepts traffic from anywhere"),
                                       ("egress", "workload_open_egress", "medium", "may send traffic anywhere, "
                                        "the internet included")):
                if st[d] == UNPROTECTED and (p.namespace, p.workload, check) not in seen:
                    seen.add((p.namespace, p.workload, check))
                    out.append((p.namespace, check, sev, f"workload {p.workload} {msg}"))
        for pol in self.policies:
            label = f"{pol.kind} {pol.namespace + '/' if pol.namespace else ''}{pol.name}"
            if pol.error:
                out.append((pol.namespace, "policy_invalid_selector", "high", f"{label} has an invalid selector"))
            elif not pol.selected:
                out.append((pol.namespace, "policy_unused", "low", f"{label} selects no endpoint"))
            if pol.enforcing and (pol.allow_all("ingress") or pol.allow_all("egress")):
                out.append((pol.namespace, "policy_allow_all", "high", f"{label} has a rule that allows everything"))
        return out
