"""Product routes: parse, call one use case, shape the answer."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from bazaar.catalog.adapters.uow import SqlUnitOfWork
from bazaar.catalog.api.deps import Writer
from bazaar.catalog.api.schemas import ProductCreate, ProductRead, ProductUpdate
from bazaar.catalog.domain.model import NewProduct, Product, ProductFilter
from bazaar.catalog.service import products as use
from bazaar.shared.db import Database
from bazaar.shared.deps import Db, Idempotency, database
from bazaar.shared.etag import check_if_match, if_none_match_matches, strong_etag
from bazaar.shared.fastlane import FastRoute, api_route
from bazaar.shared.idempotency import OptionalIdempotencyKey, StoredResponse
from bazaar.shared.idempotency.respond import respond_once
from bazaar.shared.openapi import problem_responses
from bazaar.shared.pagination import Page, Pagination
from bazaar.shared.problem import ValidationFailed

router = APIRouter(prefix="/v1/products", tags=["products"])


def cache_control(request: Request) -> str:
    """Browsers revalidate (cheap with If-None-Match); shared caches keep it `s-maxage` s."""
    seconds: int = request.app.state.settings.cache_s_maxage
    return f"public, max-age=0, s-maxage={seconds}"


def product_etag(product: Product) -> str:
    """The strong ETag of a product's current version."""
    return strong_etag(product.id, product.version)


def _location(product: Product) -> str:
    return f"/v1/products/{product.id}"


def _read_headers(product: Product, request: Request) -> dict[str, str]:
    return {"ETag": product_etag(product), "Cache-Control": cache_control(request)}


def _product_response(product: Product, headers: dict[str, str]) -> Response:
    """The product as JSON: pydantic writes the bytes JSONResponse would, without a dict first."""
    body = ProductRead.of(product).model_dump_json()
    return Response(body, media_type="application/json", headers=headers)


@router.get("", response_model=Page[ProductRead], responses=problem_responses(422))
async def list_products(
    request: Request,
    db: Db,
    page: Pagination,
    q: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    min_price_cents: Annotated[int | None, Query(ge=0, le=100_000_000)] = None,
    max_price_cents: Annotated[int | None, Query(ge=0, le=100_000_000)] = None,
    in_stock: bool | None = None,
) -> JSONResponse:
    """List products, newest first, with filters and cursor pagination."""
    if min_price_cents is not None and max_price_cents is not None:
        if min_price_cents > max_price_cents:
            raise ValidationFailed(
                [
                    {
                        "loc": ["query", "min_price_cents"],
                        "msg": "min_price_cents must not exceed max_price_cents",
                        "type": "value_error",
                    }
                ]
            )
    after = page.after()
    filters = ProductFilter(q, min_price_cents, max_price_cents, in_stock)
    async with db.connection() as conn:
        rows = await use.list_products(
            filters, limit=page.limit + 1, after=after, uow=SqlUnitOfWork(conn)
        )
    answer = page.answer(request.url, rows, ProductRead.of)
    answer.headers["Cache-Control"] = cache_control(request)
    return answer


@router.get(
    "/{product_id}",
    response_model=ProductRead,
    responses={304: {"description": "Not Modified"}, **problem_responses(404, 422)},
)
async def get_product(
    request: Request,
    product_id: UUID,
    db: Db,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Get one product; answers 304 when `If-None-Match` holds its current ETag."""
    return await read_product(request, product_id, db, if_none_match)


async def read_product(
    request: Request, product_id: UUID, db: Database, if_none_match: str | None
) -> Response:
    """The answer to a product read, for the route above and its fast lane alike."""
    async with db.connection() as conn:
        product = await use.get_product(product_id, uow=SqlUnitOfWork(conn))
    headers = _read_headers(product, request)
    if if_none_match_matches(if_none_match, headers["ETag"]):
        return Response(status_code=304, headers=headers)
    return _product_response(product, headers)


#: The router's prefix, `/` and a canonical hyphenated UUID, either case (else: FastAPI).
PRODUCT_PATH = re.compile(
    re.escape(router.prefix)
    + r"/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
)


async def read_product_fast(request: Request, match: re.Match[str]) -> Response:
    """`get_product` in the fast lane: the same `read_product`, from the path's UUID.

    An unknown product or a busy database raises, and the lane answers it with the app's
    exception handlers, as the route's errors are answered (`bazaar.shared.fastlane`).
    """
    db = await database(request)
    return await read_product(request, UUID(match[1]), db, request.headers.get("if-none-match"))


@router.post(
    "",
    status_code=201,
    response_model=ProductRead,
    responses=problem_responses(401, 403, 409, 422),
)
async def create_product(
    request: Request,
    body: ProductCreate,
    caller: Writer,
    db: Db,
    store: Idempotency,
    idempotency_key: OptionalIdempotencyKey,
) -> Response:
    """Create a product (an `Idempotency-Key` makes retries safe)."""
    new = NewProduct(**body.model_dump())

    async def operation(conn: asyncpg.Connection) -> StoredResponse:
        product = await use.create_product(new, uow=SqlUnitOfWork(conn))
        headers = {"Location": _location(product), "ETag": product_etag(product)}
        return StoredResponse(201, ProductRead.of(product).model_dump(mode="json"), headers)

    return await respond_once(
        request,
        operation=operation,
        db=db,
        store=store,
        key=idempotency_key,
        principal=caller.subject,
        body=body.model_dump(mode="json"),
    )


@router.patch(
    "/{product_id}",
    response_model=ProductRead,
    responses=problem_responses(401, 403, 404, 412, 422, 428),
)
async def update_product(
    request: Request,
    product_id: UUID,
    patch: Annotated[ProductUpdate, Body(media_type="application/merge-patch+json")],
    _caller: Writer,
    db: Db,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Change a product with a JSON merge patch; `If-Match` with its ETag is required."""
    async with db.transaction() as conn:
        product = await use.update_product(
            product_id,
            patch.changes(),
            precondition=lambda current: check_if_match(if_match, product_etag(current)),
            uow=SqlUnitOfWork(conn),
        )
    return _product_response(product, _read_headers(product, request))


@router.delete(
    "/{product_id}",
    status_code=204,
    response_class=Response,
    responses=problem_responses(401, 403, 404, 412),
)
async def delete_product(
    product_id: UUID,
    _caller: Writer,
    db: Db,
    if_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Delete a product; an `If-Match`, when sent, must hold its current ETag."""

    def precondition(current: Product) -> None:
        if if_match is not None:
            check_if_match(if_match, product_etag(current))

    async with db.transaction() as conn:
        await use.delete_product(product_id, precondition=precondition, uow=SqlUnitOfWork(conn))
    return Response(status_code=204)


#: The hot reads answered in the fast lane (`bazaar.shared.fastlane`): FastAPI's routing and
#: dependency solving cost more than the read itself.
FAST_ROUTES = (
    FastRoute(
        "GET",
        PRODUCT_PATH,
        api_route(router, get_product),
        read_product_fast,
        solves=(database,),  # `read_product_fast` takes the pool as the `Db` dependency does
    ),
)
