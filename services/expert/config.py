"""ExpertConfig: settings of the expert service, from environment variables."""
from __future__ import annotations

from dataclasses import dataclass

from tempest_common.config import load_config, setting


@dataclass(frozen=True)
class ExpertConfig:
    bind: str = setting("EXPERT_BIND", "tcp://*:5556", help="ROUTER address the service binds")
    metrics_port: int = setting("METRICS_PORT", 9102, min=0, max=65535, help="Prometheus /metrics port (0 = off)")
    max_batch: int = setting("EXPERT_MAX_BATCH", 4096, min=1, max=1_000_000,
                             help="states decided in one policy call across queued requests")
    max_states: int = setting("EXPERT_MAX_STATES", 4096, min=1, max=65_536,
                              help="states one request may carry; more is refused (too_many_states), and a "
                                   "message far larger cuts the sender's connection")


def load_expert_config(environ=None) -> ExpertConfig:
    return load_config(ExpertConfig, environ)
