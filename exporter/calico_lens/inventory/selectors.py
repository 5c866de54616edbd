"""Calico's selector language and Kubernetes label selectors, parsed once and evaluated on labels.

Calico: ``==``, ``!=``, ``in {..}``, ``not in {..}``, ``has(k)``, ``!``, ``&&``, ``||``, parentheses,
``all()``, ``global()``, ``starts with``, ``ends with``, ``contains``, string literals in single or
double quotes. An empty selector selects everything. Semantics follow Calico's documentation:
``k != 'v'`` and ``k not in {..}`` are true when the label is missing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

Labels = Mapping[str, str]
Pred = Callable[[Labels], bool]


class SelectorError(ValueError):
    """A selector that cannot be parsed; the message says where."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'[^']*'|\"[^\"]*\")|(?P<op>==|!=|&&|\|\||[!(){},])"
    r"|(?P<word>[A-Za-z0-9_./\-]+(?:\([^)]*\))?))"
)


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise SelectorError(f"unexpected {text[pos:pos + 10]!r} at position {pos}")
        out.append(m.group(m.lastgroup))  # type: ignore[arg-type]
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self, k: int = 0) -> str | None:
        return self.toks[self.i + k] if self.i + k < len(self.toks) else None

    def take(self, want: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise SelectorError(f"expected {want or 'more'} in {self.text!r}, found {tok or 'the end'}")
        self.i += 1
        return tok

    def parse(self) -> Pred:
        if not self.toks:
            return lambda _labels: True
        pred = self._or()
        if self.peek() is not None:
            raise SelectorError(f"unexpected {self.peek()!r} in {self.text!r}")
        return pred

    def _or(self) -> Pred:
        parts = [self._and()]
        while self.peek() == "||":
            self.take()
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda lab, ps=tuple(parts): any(p(lab) for p in ps))

    def _and(self) -> Pred:
        parts = [self._not()]
        while self.peek() == "&&":
            self.take()
            parts.append(self._not())
        return parts[0] if len(parts) == 1 else (lambda lab, ps=tuple(parts): all(p(lab) for p in ps))

    def _not(self) -> Pred:
        if self.peek() == "!":
            self.take()
            inner = self._not()
            return lambda lab: not inner(lab)
        return self._atom()

    def _value(self) -> str:
        tok = self.take()
        if tok[0] not in "'\"":
            raise SelectorError(f"expected a quoted value in {self.text!r}, found {tok!r}")
        return tok[1:-1]

    def _set(self) -> frozenset[str]:
        self.take("{")
        values: list[str] = []
        while self.peek() != "}":
            values.append(self._value())
            if self.peek() == ",":
                self.take()
        self.take("}")
        return frozenset(values)

    def _atom(self) -> Pred:
        tok = self.peek()
        if tok == "(":
            self.take()
            inner = self._or()
            self.take(")")
            return inner
        tok = self.take()
        if tok == "all()":
            return lambda _lab: True
        if tok == "global()":
            return lambda lab: lab.get("__global__") == "true"
        if tok.startswith("has(") and tok.endswith(")"):
            key = tok[4:-1].strip()
            if not key:
                raise SelectorError(f"has() needs a label key in {self.text!r}")
            return lambda lab: key in lab
        if "(" in tok or tok[0] in "'\"{}),!&|=":
            raise SelectorError(f"unexpected {tok!r} in {self.text!r}")
        key = tok
        op = self.take()
        if op == "==":
            v = self._value()
            return lambda lab: lab.get(key) == v
        if op == "!=":
            v = self._value()
            return lambda lab: lab.get(key) != v
        if op == "in":
            s = self._set()
            return lambda lab: key in lab and lab[key] in s
        if op == "not" and self.peek() == "in":
            self.take()
            s = self._set()
            return lambda lab: lab.get(key) not in s
        if op in ("starts", "ends") and self.peek() == "with":
            self.take()
            v = self._value()
            if op == "starts":
                return lambda lab: key in lab and lab[key].startswith(v)
            return lambda lab: key in lab and lab[key].endswith(v)
        if op == "contains":
            v = self._value()
            return lambda lab: key in lab and v in lab[key]
        raise SelectorError(f"unknown operator {op!r} after {key!r} in {self.text!r}")


def calico(text: str | None) -> Pred:
    """A predicate over labels for a Calico selector; raises SelectorError."""
    return _Parser(text or "").parse()


def kubernetes(sel: Mapping | None) -> Pred:
    """A predicate for a Kubernetes LabelSelector (matchLabels, matchExpressions); {} selects all."""
    if sel is None:
        return lambda _lab: True
    if not isinstance(sel, Mapping):
        raise SelectorError("a label selector must be a mapping")
    preds: list[Pred] = []
    for k, v in (sel.get("matchLabels") or {}).items():
        preds.append(lambda lab, k=k, v=str(v): lab.get(k) == v)
    for e in sel.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), frozenset(str(x) for x in e.get("values") or [])
        if not key:
            raise SelectorError("matchExpressions entry without a key")
        if op == "In":
            preds.append(lambda lab, k=key, s=values: lab.get(k) in s)
        elif op == "NotIn":
            preds.append(lambda lab, k=key, s=values: lab.get(k) not in s)
        elif op == "Exists":
            preds.append(lambda lab, k=key: k in lab)
        elif op == "DoesNotExist":
            preds.append(lambda lab, k=key: k not in lab)
        else:
            raise SelectorError(f"unknown matchExpressions operator {op!r}")
    return lambda lab: all(p(lab) for p in preds)
