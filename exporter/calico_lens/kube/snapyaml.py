"""The documents of a YAML snapshot (``kubectl get ... -o yaml``), as ``yaml.load_all`` with
PyYAML's CSafeLoader gives them, ten times quicker where the C reader is built (``_snapyaml``:
libyaml's events straight into Python objects). Whatever that reader leaves (anchors, tags, an
error) is read by PyYAML itself, so results and error messages are PyYAML's."""

from __future__ import annotations

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

try:
    from calico_lens.kube import _snapyaml
except ImportError:  # built without a compiler or without libyaml's headers: PyYAML alone
    _snapyaml = None

LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML has it
_FALLBACK = object()
_RESOLVER = Resolver()
_CONSTRUCTOR = SafeConstructor()
_SCALARS = {tag: SafeConstructor.yaml_constructors[tag] for tag in (
    "tag:yaml.org,2002:null", "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:str")}


def _plain(value: str) -> object:
    """A plain scalar the C reader could not type itself, typed by PyYAML's resolver and constructor."""
    construct = _SCALARS.get(_RESOLVER.resolve(ScalarNode, value, (True, False)))
    if construct is None:  # a merge key, `=`, ...: PyYAML's composer gives these their meaning
        return _FALLBACK
    try:
        return construct(_CONSTRUCTOR, ScalarNode("", value))
    except ValueError:  # e.g. a timestamp with month 13: PyYAML raises it in its own words
        return _FALLBACK


def load_all(data: bytes) -> list:
    """Every document of ``data``; raises what ``yaml.load_all(data, CSafeLoader)`` raises."""
    if _snapyaml is not None:
        docs = _snapyaml.load_all(data, _plain, _FALLBACK)
        if docs is not None:
            return docs
    return list(yaml.load_all(data, Loader=LOADER))
