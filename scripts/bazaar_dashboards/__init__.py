"""Bazaar's Grafana dashboards as code (grafana-foundation-sdk), rendered to JSON.

`python scripts/dashboards.py` writes deploy/monitoring/dashboards/<name>.json; compose's
Grafana provisions them; tests/monitoring/test_dashboards.py checks the files are what this
code renders, and the system test runs every query against a real Prometheus.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from bazaar_dashboards import gateway, messaging, orders, overview

#: File name (without .json) -> the function building that dashboard.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "overview": overview.build,
    "orders": orders.build,
    "messaging": messaging.build,
    "gateway": gateway.build,
}


def render(name: str) -> str:
    """One dashboard as the JSON text committed for it (stable: keys sorted, ids in order)."""
    model = DASHBOARDS[name]().build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def render_all() -> dict[str, str]:
    """Every dashboard: file name -> JSON text."""
    return {f"{name}.json": render(name) for name in DASHBOARDS}
