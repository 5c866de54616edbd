"""``calico-lens replay``: count the flows in log files offline and print the exposition."""

from __future__ import annotations

import sys

from calico_lens.agent import Agent
from calico_lens.config import Config, ConfigError
from calico_lens.sources.tail import read_to_end


def replay(cfg: Config, paths: list[str], out=None) -> int:
    agent = Agent(cfg)
    if cfg.snapshot:
        from calico_lens.agent import load_snapshot

        load_snapshot(agent.store, cfg.snapshot)
    process = agent.pipeline.process
    for path in paths:
        name = "stdin" if path == "-" else "file"
        try:
            read_to_end(path, process, agent._error, name)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    (out or sys.stdout.buffer).write(agent.exposition())
    return 0
