"""The catalog's /metrics as Prometheus scrapes it: the names every process shares (issue 14)."""

from __future__ import annotations

import importlib.metadata
import platform
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

#: Every process's names, as scraped (deploy/README.md); the catalog has a database too.
SPEC_NAMES = {
    "http_server_request_duration_seconds_bucket",
    "http_server_request_duration_seconds_count",
    "http_server_request_duration_seconds_sum",
    "http_server_active_requests",
    "bazaar_build_info",
    "process_start_time_seconds",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "python_info",
    "python_gc_objects_collected_total",
    "bazaar_db_pool_connections",
    "bazaar_db_pool_max_connections",
    "bazaar_db_pool_waiting",
    "bazaar_db_pool_acquire_timeouts_total",
}
#: Names issue 14 retired.
OLD_NAMES = {"http_server_requests_total", "http_server_requests_in_flight", "bazaar_service_info"}


async def _scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


async def test_a_scrape_shows_the_shared_names_and_labels_and_none_of_the_old(
    client: httpx.AsyncClient, new_product: Callable[..., Awaitable[dict[str, Any]]]
) -> None:
    product = await new_product()
    assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200
    assert (await client.get(f"/v1/products/{uuid.uuid4()}")).status_code == 404

    samples = await _scrape(client)

    names = {s.name for s in samples}
    assert SPEC_NAMES <= names, SPEC_NAMES - names
    assert not names & OLD_NAMES
    counts = {
        (
            s.labels["http_request_method"],
            s.labels["http_route"],
            s.labels["http_response_status_code"],
        ): s.value
        for s in samples
        if s.name == "http_server_request_duration_seconds_count"
    }
    assert counts[("POST", "/v1/products", "201")] == 1
    assert counts[("GET", "/v1/products/{product_id}", "200")] == 1
    assert counts[("GET", "/v1/products/{product_id}", "404")] == 1
    assert all(
        set(s.labels) <= {"http_request_method", "http_route", "http_response_status_code", "le"}
        for s in samples
        if s.name.startswith("http_server_request_duration_seconds")
    )
    pool = {s.labels["state"]: s.value for s in samples if s.name == "bazaar_db_pool_connections"}
    assert set(pool) == {"in_use", "idle"}
    [size] = [s.value for s in samples if s.name == "bazaar_db_pool_max_connections"]
    assert size == 20  # the suite's db_pool_max


async def test_build_info_and_version_report_the_installed_package_version(
    client: httpx.AsyncClient,
) -> None:
    installed = importlib.metadata.version("bazaar-catalog")

    version = (await client.get("/version")).json()
    [info] = [s for s in await _scrape(client) if s.name == "bazaar_build_info"]

    assert version["version"] == installed
    assert info.value == 1
    assert info.labels == {
        "service": "catalog",
        "version": installed,
        "python_version": platform.python_version(),
    }
