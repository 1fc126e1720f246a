"""The gateway's public API description: merged ``/openapi.json`` and self-hosted ``/docs``."""

from bazaar.gateway.docs.aggregator import OpenApiAggregator
from bazaar.gateway.docs.merge import merge_openapi
from bazaar.gateway.docs.routes import docs_routes

__all__ = ["OpenApiAggregator", "docs_routes", "merge_openapi"]
