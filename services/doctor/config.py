"""DoctorConfig: settings of the stability doctor, from environment variables."""
from __future__ import annotations

from dataclasses import dataclass

from tempest_common.config import ConfigError, load_config, setting


@dataclass(frozen=True)
class DoctorConfig:
    mode: str = setting("DOCTOR_MODE", "advise", choices=("off", "advise", "auto"),
                        help="off: export metrics only; advise: write the diagnosis; auto: also roll back and apply "
                             "the cure through the learner's control endpoint")
    source: str = setting("DOCTOR_SOURCE", "prometheus", choices=("prometheus", "scrape"),
                          help="where the metric history comes from: Prometheus' HTTP API, or the services' /metrics "
                               "scraped by the doctor itself (DOCTOR_SCRAPE_URLS)")
    prometheus_url: str = setting("PROMETHEUS_URL", "http://127.0.0.1:9090", help="Prometheus' HTTP API")
    scrape_urls: str = setting("DOCTOR_SCRAPE_URLS", "http://127.0.0.1:9104/metrics,http://127.0.0.1:9103/metrics",
                               help="comma-separated /metrics URLs of the learner and the replay "
                                    "(DOCTOR_SOURCE=scrape)")
    control_addr: str = setting("CONTROL_ADDR", "tcp://127.0.0.1:5559", help="the learner's control ROUTER")
    control_token_file: str = setting("CONTROL_TOKEN_FILE", "",
                                      help="the learner's control token ('' = CHECKPOINT_DIR/control-token)")
    checkpoint_dir: str = setting("CHECKPOINT_DIR", "run/checkpoints",
                                  help="the learner's checkpoint folder (where its control token is)")
    doctor_dir: str = setting("DOCTOR_DIR", "run/doctor", help="where diagnosis.md and actions.jsonl are written")
    interval_s: float = setting("DOCTOR_INTERVAL_S", 30.0, min=0.05, max=3600.0, help="seconds between diagnoses")
    window_s: float = setting("DOCTOR_WINDOW_S", 900.0, min=1.0, max=7 * 86_400.0,
                              help="metric history read for each diagnosis (the symptoms' time span)")
    memory_s: float = setting("DOCTOR_MEMORY_S", 120.0, min=0.0, max=86_400.0,
                              help="Q out of its bound within this many seconds is a divergence (an explosion that "
                                   "collapsed since still counts)")
    settle_s: float = setting("DOCTOR_SETTLE_S", 15.0, min=0.0, max=3600.0,
                              help="after an action, Q from this many seconds on is judged (the learner's interval "
                                   "aggregates still hold steps from before it)")
    cooldown_s: float = setting("DOCTOR_COOLDOWN_S", 900.0, min=0.0, max=86_400.0,
                                help="auto: no action sooner than this after the previous one")
    max_actions_per_hour: int = setting("DOCTOR_MAX_ACTIONS_PER_HOUR", 2, min=0, max=1000,
                                        help="auto: actions (rollback + set) in any hour at most")
    timeout_s: float = setting("DOCTOR_TIMEOUT_S", 5.0, min=0.1, max=300.0,
                               help="timeout of each Prometheus query, scrape and control request")
    metrics_port: int = setting("METRICS_PORT", 9105, min=0, max=65535,
                                help="HTTP port: /metrics and /diagnosis.md (0 = off)")

    def scrape_list(self) -> list[str]:
        urls = [u.strip() for u in self.scrape_urls.split(",") if u.strip()]
        if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
            raise ConfigError(f"DOCTOR_SCRAPE_URLS={self.scrape_urls!r} is not a comma-separated list of http:// URLs")
        return urls


def load_doctor_config(environ=None) -> DoctorConfig:
    cfg = load_config(DoctorConfig, environ)
    if cfg.source == "scrape":
        cfg.scrape_list()
    if not cfg.prometheus_url.startswith(("http://", "https://")):
        raise ConfigError(f"PROMETHEUS_URL={cfg.prometheus_url!r} is not an http:// URL")
    return cfg
