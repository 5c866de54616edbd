"""Metric families of the cluster inventory, built from a Model."""

from __future__ import annotations

from collections import Counter

from prometheus_client.core import GaugeMetricFamily, Metric

from calico_lens.inventory.model import DIRECTIONS, WEIGHTS, Model
from calico_lens.metrics import names


def families(model: Model) -> list[Metric]:
    info = GaugeMetricFamily(names.POLICY_INFO, "The policy board: one series per policy.",
                             labels=("policy", "namespace", "kind", "tier", "order", "types"))
    selected = GaugeMetricFamily(names.POLICY_SELECTED, "Pods each policy selects.",
                                 labels=("policy", "namespace", "kind", "tier"))
    rules = GaugeMetricFamily(names.POLICY_RULES, "Rules per policy, direction and action.",
                              labels=("policy", "namespace", "kind", "tier", "direction", "action"))
    errors = GaugeMetricFamily(names.POLICY_ERRORS, "1 for each policy whose selector cannot be parsed "
                               "(it is treated as selecting nothing).", labels=("policy", "namespace", "kind"))
    states: Counter[tuple[str, str, str]] = Counter()
    for p in sorted(model.policies, key=lambda p: (p.kind, p.namespace, p.name)):
        base = (names.policy_label(p.namespace, p.name), p.namespace, p.kind, p.tier)
        info.add_metric((*base[:4], p.order, ",".join(p.types)), 1)
        selected.add_metric(base, len(p.selected))
        for d in DIRECTIONS:
            for action, n in sorted(Counter(str(r.get("action", "")).lower() for r in p.rules[d]).items()):
                rules.add_metric((*base, d, action), n)
        if p.error:
            errors.add_metric(base[:3], 1)
        states[(p.kind, p.tier, "invalid" if p.error else "active" if p.selected else "unused")] += 1
    policies = GaugeMetricFamily(names.POLICIES, "Policies by kind, tier and state (active selects pods, unused "
                                 "selects none, invalid cannot be parsed).", labels=("kind", "tier", "state"))
    for key, n in sorted(states.items()):
        policies.add_metric(key, n)
    endpoints = GaugeMetricFamily(names.ENDPOINTS, "Pods by ingress and egress protection: default_deny, "
                                  "isolated, unprotected.", labels=("namespace", "ingress", "egress"))
    for key, n in sorted(model.endpoint_counts().items()):
        endpoints.add_metric(key, n)
    isolation = GaugeMetricFamily(names.NAMESPACE_ISOLATION, "1 when a default deny covers every pod of the "
                                  "namespace in that direction.", labels=("namespace", "direction"))
    for key, v in sorted(model.namespace_isolation().items()):
        isolation.add_metric(key, v)
    comp = model.components()
    score = GaugeMetricFamily(names.SECURITY_SCORE, "Security posture score, 0-100 (see the README).")
    score.add_metric((), model.score(comp))
    component = GaugeMetricFamily(names.SECURITY_COMPONENT, "Points each component adds to the score "
                                  "(its weight times the share that scores).", labels=("component",))
    for k, v in comp.items():
        component.add_metric((k,), round(WEIGHTS[k] * v, 2))
    ns_score = GaugeMetricFamily(names.NAMESPACE_SCORE, "Security score of one namespace, 0-100.",
                                 labels=("namespace",))
    for ns, v in model.namespace_scores().items():
        ns_score.add_metric((ns,), v)
    rec = GaugeMetricFamily(names.RECOMMENDATION, "One series per open finding, with what to do in message.",
                            labels=("namespace", "check", "severity", "message"))
    for r in model.recommendations():
        rec.add_metric(r, 1)
    return [info, selected, rules, errors, policies, endpoints, isolation, score, component, ns_score, rec]
