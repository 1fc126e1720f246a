"""Catalog settings (environment prefix CATALOG_)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from bazaar.shared.settings import ServiceSettings


class CatalogSettings(ServiceSettings):
    """Settings of the catalog service."""

    model_config = SettingsConfigDict(env_prefix="CATALOG_", env_file=".env", extra="ignore")
    service_name: ClassVar[str] = "catalog"

    port: int = 8002
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/bazaar_catalog")
    #: Seconds shared caches (the gateway) may keep a public product read (`s-maxage`);
    #: browsers always revalidate (`max-age=0`).
    cache_s_maxage: int = Field(default=30, ge=0, le=86_400)
