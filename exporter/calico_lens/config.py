"""One configuration, from a YAML file, environment variables and flags (in rising precedence).

Every setting has a YAML key, an environment variable ``CALICO_LENS_<KEY>`` and (for the ones an
operator changes often) a flag. A bad value stops the program before it serves, with a message
that names the field, the value and what is allowed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from calico_lens.parse.prefix import PrefixMatcher, TemplateError
from calico_lens.sources import registry

GRANULARITIES = ("namespace", "workload", "pod")
ENV_PREFIX = "CALICO_LENS_"


class ConfigError(ValueError):
    """A setting is wrong; the message says which, what it was and what is allowed."""


@dataclass
class Config:
    log_prefix: str = "calico-packet"  # FelixConfiguration logPrefix (%t %k %n %p)
    sources: list[str] = field(default_factory=list)  # specs, grammar in sources/registry.py
    metrics_address: str = "127.0.0.1:9808"
    web_config_file: str = ""  # TLS and basic auth of /metrics (Prometheus exporter-toolkit format)
    metrics_max_connections: int = 16  # concurrent requests to /metrics, /healthz, /readyz; more: 503, counted
    metrics_request_timeout: float = 10.0  # seconds a connection has to send its request, in all
    snapshot: str = ""  # static Kubernetes objects instead of the API server
    kubeconfig: str = ""  # empty: in-cluster config, else ~/.kube/config
    source_granularity: str = "workload"
    destination_granularity: str = "workload"
    max_series: int = 20000  # per metric, the overflow series included
    series_ttl: float = 3600.0  # seconds an idle series lives; 0 keeps them forever
    interface_prefix: str = "cali"  # FelixConfiguration interfacePrefix
    external_by_ip: bool = False  # name public/private endpoints by IP (high cardinality!)
    enrich_cache_size: int = 50000  # bound of each enrichment cache: key parts, spans, addresses, verdicts
    log_level: str = "info"
    input_format: str = "auto"  # auto (kernel flow and CoreDNS lines, told apart per line) | kernel | coredns
    cluster_domain: str = "cluster.local"  # names under it are zone "cluster"
    dns_top_domains: int = 100  # external domains tracked by name; the rest fold into __other__
    syn_retry_window: float = 60.0  # a SYN resent within this long is a retry, not a new flow (0: off)
    syn_retry_max: int = 20000  # recent connection attempts remembered to tell retries apart
    # TCP health and traffic volume from the kernel (need the host PID namespace / host network)
    tcp_stats: bool = False  # per-pod snmp/netstat/dev counters and sock_diag RTT
    conntrack: bool = False  # per-flow bytes/packets and unreplied connections from conntrack
    tcp_interval: float = 15.0  # seconds between collection rounds
    proc_root: str = "/proc"  # the host's /proc (e.g. /host/proc in a container)
    conntrack_netns: str = ""  # network namespace to read conntrack in (default: the agent's own)
    unreplied_after: float = 5.0  # seconds without a reply before a connection counts as unreplied
    # Fluent Bit receivers (sources: forward:HOST:PORT, forward:unix:PATH, http:HOST:PORT); the HTTP
    # ingest takes the same users (basic auth, no shared key needed), TLS files and limits
    forward_shared_key: str = ""  # enables the HELO/PING/PONG handshake
    forward_users: dict[str, str] = field(default_factory=dict)  # username: password (with a shared key)
    forward_tls_cert: str = ""  # PEM certificate (and key) to serve TLS
    forward_tls_key: str = ""
    forward_max_frame_bytes: int = 16 * 1024 * 1024
    forward_max_connections: int = 64
    forward_max_buffered_bytes: int = 64 * 1024 * 1024  # frames held across connections (2 bytes per byte read)
    forward_idle_timeout: float = 60.0
    forward_frame_timeout: float = 30.0  # a begun frame must complete within this (slow clients)
    # Felix's flow records (source felix): goldmane.FlowCollector/Connect on a unix socket
    felix_max_message_bytes: int = 1024 * 1024  # one FlowUpdate; larger ones are refused and counted
    felix_max_streams: int = 4  # concurrent Connect streams (one Felix per node; restarts overlap)
    felix_idle_timeout: float = 900.0  # a stream silent this long is closed (Felix flushes every 5 min by default)
    felix_absent_after: float = 60.0  # no Felix connected this long: not ready, with the fix in the message
    felix_dedupe_max: int = 200000  # (key, start, end) entries kept to drop Felix's resends
    felix_label_cache_size: int = 20000  # distinct Felix flow keys whose labels are remembered
    # On stop, write what was counted beside the socket, so that the next agent does not count
    # Felix's resends of it again (Felix resends its last 5 minutes to every new connection).
    felix_keep_seen: bool = True
    felix_seen_save_interval: float = 60.0  # ... and this often while running (a crash counts this much twice)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}
_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.\-]*):(\d{1,5})$")


def _duration(name: str, value: Any) -> float:
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{name}: {value!r} is not a duration; use seconds or a number with ms/s/m/h, e.g. 30m")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _int(name: str, value: Any, low: int) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is not a whole number (at least {low})") from None
    if n < low:
        raise ConfigError(f"{name}: {n} is too small; it must be at least {low}")
    return n


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: {value!r} is not a boolean; use true or false")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise ConfigError(f"{name}: {value!r} is not allowed; use one of {', '.join(allowed)}")
    return text


def validate_source(spec: str) -> str:
    try:
        return registry.parse(spec).text
    except registry.SpecError as e:
        raise ConfigError(f"sources: {e}") from None


def _coerce(name: str, value: Any) -> Any:
    if name in ("forward_max_frame_bytes", "forward_max_connections", "forward_max_buffered_bytes",
                "metrics_max_connections", "felix_max_message_bytes", "felix_max_streams", "felix_dedupe_max",
                "felix_label_cache_size"):
        return _int(name, value, 1)
    if name in ("forward_idle_timeout", "forward_frame_timeout", "felix_idle_timeout", "felix_absent_after",
                "felix_seen_save_interval",
                "metrics_request_timeout"):
        return _duration(name, value)
    if name == "forward_users":
        if isinstance(value, str):  # from the environment: user:password,user2:password2
            value = dict(item.split(":", 1) for item in value.split(",") if ":" in item)
        if not isinstance(value, dict):
            raise ConfigError("forward_users: must be a mapping of username: password")
        return {str(k): str(v) for k, v in value.items()}
    if name in ("source_granularity", "destination_granularity"):
        return _choice(name, value, GRANULARITIES)
    if name == "input_format":
        return _choice(name, value, ("auto", "kernel", "coredns"))
    if name in ("dns_top_domains", "syn_retry_max"):
        return _int(name, value, 1)
    if name == "syn_retry_window":
        return _duration(name, value)
    if name == "cluster_domain":
        text = str(value).strip().strip(".")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", text):
            raise ConfigError(f"cluster_domain: {value!r} is not a DNS domain (e.g. cluster.local)")
        return text
    if name == "log_level":
        return _choice(name, value, ("debug", "info", "warning", "error"))
    if name == "max_series":
        return _int(name, value, 2)
    if name == "enrich_cache_size":
        return _int(name, value, 1)
    if name == "series_ttl":
        return _duration(name, value)
    if name in ("external_by_ip", "tcp_stats", "conntrack", "felix_keep_seen"):
        return _bool(name, value)
    if name in ("tcp_interval", "unreplied_after"):
        return _duration(name, value)
    if name == "sources":
        items = value if isinstance(value, list) else [s for s in str(value).split(",") if s.strip()]
        return [validate_source(str(s).strip()) for s in items]
    if name == "metrics_address":
        text = str(value)
        m = _ADDRESS.match(text)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise ConfigError(f"metrics_address: {text!r} is not HOST:PORT (e.g. 127.0.0.1:9808 or :9808)")
        return text
    if name == "log_prefix":
        try:
            PrefixMatcher(str(value))
        except TemplateError as e:
            raise ConfigError(f"log_prefix: {e}") from None
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name}: {value!r} must be a string")
    return value


def load(path: str = "", env: dict[str, str] | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults < YAML file < environment < overrides (flags). Raises ConfigError."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    known = Config.keys()
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        except OSError as e:
            raise ConfigError(f"config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path}: not valid YAML: {e}") from None
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of settings")
        for k, v in doc.items():
            key = str(k).replace("-", "_")
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {k!r}; known settings: {', '.join(known)}")
            values[key] = v
    for key in known:
        var = ENV_PREFIX + key.upper()
        if var in env and env[var] != "":
            values[key] = env[var]
    for key, v in (overrides or {}).items():
        if v is not None and v != []:
            values[key] = v
    cfg = Config()
    for key, v in values.items():
        setattr(cfg, key, _coerce(key, v))
    check(cfg)
    return cfg


def check(cfg: Config) -> None:
    """Settings that are wrong together. The Forward protocol checks users only inside its shared-key
    handshake: users without a key would leave Forward open while HTTP enforces them."""
    forward = any(registry.parse(s).kind == "forward" for s in cfg.sources)
    if cfg.forward_users and not cfg.forward_shared_key and forward:
        raise ConfigError("forward_users: set forward_shared_key too; the Forward protocol asks for users "
                          "only in its shared-key handshake, so without a key anyone could send")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)
