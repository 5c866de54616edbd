"""The ``calico-lens`` command: agent, replay and demo."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from calico_lens import __version__
from calico_lens.config import ConfigError, load
from calico_lens.sources import registry

DESCRIPTION = """\
calico-lens turns the packet log lines of Calico log-action policies into labelled Prometheus
metrics, with Kubernetes context (namespace, workload, kind) and policy context (policy, tier,
verdict).

Start here:
  calico-lens demo                      a made-up cluster with traffic; prints the URLs to open
  calico-lens replay /var/log/kern.log  count the flows in a copied log, print the metrics
  calico-lens agent --source kmsg       the node daemon (what the Helm chart runs)

Every flag also has a config-file key and an environment variable: --log-prefix is
log_prefix in the YAML file and CALICO_LENS_LOG_PREFIX in the environment.
"""


def _common(p: argparse.ArgumentParser, sources: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML file of settings (keys as in the README)")
    p.add_argument("--snapshot", metavar="FILE",
                   help="Kubernetes objects as `kubectl get pods,services,namespaces,nodes,networkpolicies,"
                        "networksets,globalnetworksets,... -A -o yaml` prints them; used instead of the API")
    p.add_argument("--log-prefix", metavar="TEMPLATE",
                   help="FelixConfiguration logPrefix: %%t tier, %%k kind, %%n name, %%p namespace/name "
                        "(default: calico-packet)")
    p.add_argument("--source-granularity", choices=("namespace", "workload", "pod"),
                   help="how finely the source side is labelled (default: workload)")
    p.add_argument("--destination-granularity", choices=("namespace", "workload", "pod"),
                   help="how finely the destination side is labelled (default: workload)")
    p.add_argument("--max-series", type=int, metavar="N", help="series cap per metric (default: 20000)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--format", dest="input_format", choices=("auto", "kernel", "coredns"),
                   help="what the lines are: auto (kernel flow and CoreDNS query lines, told apart per line; "
                        "the default), kernel, coredns")
    p.add_argument("--cluster-domain", metavar="DOMAIN", help="Kubernetes cluster domain (default: cluster.local)")
    if sources:
        p.add_argument("--source", action="append", dest="sources", metavar="SPEC",
                       help="where flows come from (repeatable): " + registry.usage())
        _serving(p)


def _serving(p: argparse.ArgumentParser) -> None:
    """The flags of a command that serves /metrics and reads the Kubernetes API (agent, inventory)."""
    p.add_argument("--metrics-address", metavar="HOST:PORT",
                   help="where /metrics, /healthz and /readyz are served (default: 127.0.0.1:9808)")
    p.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig outside a cluster (default: in-cluster)")
    p.add_argument("--web-config-file", metavar="FILE",
                   help="TLS and basic auth for /metrics (Prometheus exporter-toolkit format)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calico-lens", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from calico_lens.kube.snapyaml import _snapyaml
    from calico_lens.parse.kernel_log import _scan

    scanner = "C scanner" if _scan is not None else "pure-Python scanner (no C compiler at install)"
    reader = "C snapshot YAML reader" if _snapyaml is not None else "PyYAML snapshot reader (no libyaml-dev at install)"
    parser.add_argument("--version", action="version", version=f"calico-lens {__version__} ({scanner}, {reader})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    agent = sub.add_parser("agent", help="run the node daemon: read flow logs, serve /metrics",
                           description="Read flow log sources (and Kubernetes metadata, which the felix source "
                                       "alone does not need), serve /metrics, /healthz and /readyz: not ready "
                                       "until the first metadata sync, while a source cannot run, or when no "
                                       "Felix has been connected to the felix source for a minute. Settings: "
                                       "the README's table; any of them also as CALICO_LENS_<NAME> in the "
                                       "environment.")
    _common(agent)

    replay = sub.add_parser("replay", help="count the flows in log files and print the metrics",
                            description="Read log files to the end (- for stdin), then print the Prometheus "
                                        "text exposition of everything counted. Nothing is served.")
    _common(replay, sources=False)
    replay.add_argument("logs", nargs="+", metavar="LOG", help="log file (kern.log, dmesg output, ...) or -")

    inv = sub.add_parser("inventory", help="run the cluster-wide policy board and security posture (one replica)",
                         description="Watch policies, tiers, namespaces, pods, service accounts and network sets; "
                                     "serve the policy board, endpoint protection and the security score.")
    inv.add_argument("--config", metavar="FILE", help="YAML file of settings")
    inv.add_argument("--snapshot", metavar="FILE", help="Kubernetes and Calico objects from a file instead of the API")
    inv.add_argument("--once", action="store_true", help="with --snapshot: print the metrics and exit")
    _serving(inv)
    inv.add_argument("--log-level", choices=("debug", "info", "warning", "error"))

    demo = sub.add_parser("demo", help="run a made-up cluster with generated traffic through the real agent",
                          description="Start the agent on a built-in cluster snapshot with a traffic generator "
                                      "writing realistic Calico LOG lines, a real Prometheus scraping it with the "
                                      "rules from alerts/, and a real Alertmanager with the example routing that "
                                      "prints each notification here (make setup installs both).")
    demo.add_argument("--metrics-address", metavar="HOST:PORT", default="127.0.0.1:9808")
    demo.add_argument("--prometheus-port", type=int, default=9090, metavar="PORT")
    demo.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus (nor Alertmanager)")
    demo.add_argument("--alertmanager-port", type=int, default=9093, metavar="PORT")
    demo.add_argument("--no-alertmanager", action="store_true",
                      help="do not start Alertmanager (Prometheus still evaluates the rules)")
    demo.add_argument("--no-node", action="store_true",
                      help="do not build the small real node (network namespaces with real TCP traffic, as root) "
                           "that feeds the TCP board")
    demo.add_argument("--rate", type=float, default=200.0, metavar="LINES_PER_S", help="generated lines per second")
    demo.add_argument("--duration", type=float, default=0.0, metavar="SECONDS", help="stop after this long (0: Ctrl-C)")
    return parser


_SETTINGS = ("snapshot", "log_prefix", "source_granularity", "destination_granularity", "max_series",
             "log_level", "sources", "metrics_address", "kubeconfig", "input_format", "cluster_domain",
             "web_config_file")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in _SETTINGS if getattr(args, k, None) is not None}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "demo":
            from calico_lens.demo.run import run_demo

            return run_demo(args)
        cfg = load(getattr(args, "config", None) or "", overrides=_overrides(args))
        logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.command == "inventory":
            from calico_lens.inventory.daemon import Inventory

            inventory = Inventory(cfg)
            if args.once:
                if not cfg.snapshot:
                    raise ConfigError("--once needs --snapshot FILE (the offline form)")
                inventory.load()
                sys.stdout.buffer.write(inventory.exposition())
                return 0
            return inventory.run()
        if args.command == "replay":
            from calico_lens.replay import replay

            return replay(cfg, args.logs)
        from calico_lens.agent import Agent

        if not cfg.sources:
            cfg.sources = ["kmsg"]
        agent = Agent(cfg)
        agent.start()
        return agent.run_forever()
    except ConfigError as e:
        print(f"calico-lens: configuration error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"calico-lens: {e}", file=sys.stderr)
        return 1
