"""The operator commands of every service: `topology` (a deploy step) and `parked`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence

import aio_pika
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay
from tenacity import wait_random_exponential as jittered

from bazaar.shared.messaging.consumer import Subscription
from bazaar.shared.messaging.parking import list_parked, redrive_parked
from bazaar.shared.messaging.provision import (
    QueueSpec,
    TopologyConflict,
    provision,
    service_queues,
)

#: How long the `topology` step waits for a broker that is still starting (compose, k8s).
TOPOLOGY_WAIT_SECONDS = 120.0
#: How long the step may take once connected, waiting for another run's lock included: a
#: broker that stops answering mid-way fails the deploy step instead of hanging it.
TOPOLOGY_TIMEOUT_SECONDS = 300.0
#: How long one connection attempt (TCP and the AMQP handshake) may take, at most.
CONNECT_TIMEOUT_SECONDS = 10.0
#: How long closing the connection may take (a silent broker never confirms the close).
CLOSE_TIMEOUT_SECONDS = 5.0


class TopologyTimeout(RuntimeError):
    """The broker stopped answering part-way through the `topology` step."""


def configure_parked(parser: argparse.ArgumentParser) -> None:
    """Add the `parked` sub-commands (list, show, redrive) to a parser."""
    actions = parser.add_subparsers(dest="parked_action", required=True)
    listing = actions.add_parser("list", help="one JSON line per parked message (no bodies)")
    listing.add_argument("--consumer", help="one consumer's queue (default: all of them)")
    show = actions.add_parser("show", help="one parked message with its body, as JSON")
    show.add_argument("message_id")
    show.add_argument("--consumer")
    redrive = actions.add_parser("redrive", help="send parked messages back to their consumer")
    redrive.add_argument("--consumer")
    chosen = redrive.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", dest="ids", action="append", help="a message id (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every parked message")


async def _parked(url: str, queues: Sequence[str], args: argparse.Namespace, out: list[str]) -> int:
    status = 0
    match args.parked_action:
        case "list":
            for queue in queues:
                for message in await list_parked(url, queue):
                    out.append(json.dumps({"consumer": queue, **message.summary()}))
        case "show":
            found = [
                {"consumer": queue, **message.detail()}
                for queue in queues
                for message in await list_parked(url, queue)
                if message.message_id == args.message_id
            ]
            out.extend(json.dumps(m, indent=2) for m in found)
            status = 0 if found else 1
        case "redrive":
            for queue in queues:
                ids = None if args.all else set(args.ids)
                moved = await redrive_parked(url, queue, ids)
                out.append(json.dumps({"consumer": queue, "redriven": moved}))
    return status


def run_parked(
    url: str | None, service: str, subscriptions: Sequence[Subscription], args: argparse.Namespace
) -> int:
    """Run one `parked` sub-command against the service's consumer queues; the exit status."""
    if url is None:
        sys.stderr.write(f"{service}: no broker configured (amqp_url)\n")
        return 2
    queues = [s.queue_name(service) for s in subscriptions]
    if args.consumer:
        if args.consumer not in queues:
            sys.stderr.write(f"{service}: no consumer {args.consumer!r}; have {queues}\n")
            return 2
        queues = [args.consumer]
    out: list[str] = []
    status = asyncio.run(_parked(url, queues, args, out))
    for line in out:
        sys.stdout.write(line + "\n")
    return status


def configure_topology(parser: argparse.ArgumentParser) -> None:
    """Add the `topology` options to a parser."""
    parser.add_argument(
        "--wait",
        type=float,
        default=TOPOLOGY_WAIT_SECONDS,
        help="seconds to wait for an unreachable broker (default %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=TOPOLOGY_TIMEOUT_SECONDS,
        help="seconds the step may take once connected, lock wait included (default %(default)s)",
    )


async def _provision(url: str, specs: list[QueueSpec], wait: float, bound: float) -> list[str]:
    # Only connecting is retried (a broker still starting); a refusal after that is final.
    # A connection attempt that gets no answer is a timeout (an OSError), so it is retried too.
    unreachable = retry_if_exception_type((aio_pika.exceptions.AMQPConnectionError, OSError))
    async for attempt in AsyncRetrying(
        retry=unreachable, stop=stop_after_delay(wait), wait=jittered(0.2, 5), reraise=True
    ):
        with attempt:
            try:
                async with asyncio.timeout(max(1.0, min(wait, CONNECT_TIMEOUT_SECONDS))):
                    connection = await aio_pika.connect(url)
            except TimeoutError:
                raise TimeoutError(
                    "the broker accepted the connection but did not answer"
                ) from None
    try:
        async with asyncio.timeout(bound):
            return await provision(connection, specs)
    except TimeoutError:
        raise TopologyTimeout(f"the broker stopped answering; gave up after {bound:g} s") from None
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await connection.close()


def run_topology(
    url: str | None,
    service: str,
    subscriptions: Sequence[Subscription],
    retry_delays_ms: Sequence[int],
    args: argparse.Namespace,
) -> int:
    """Declare the exchange and every queue and binding of the service; the exit status."""
    if url is None:
        sys.stdout.write(f"{service}: no broker configured (amqp_url); nothing to declare\n")
        return 0
    specs = service_queues(service, subscriptions, retry_delays_ms)
    try:
        done = asyncio.run(_provision(url, specs, args.wait, args.timeout))
    except (TopologyConflict, TopologyTimeout) as exc:
        sys.stderr.write(f"{service}: {exc}\n")
        return 1
    except (aio_pika.exceptions.AMQPError, OSError) as exc:
        sys.stderr.write(f"{service}: topology not declared ({type(exc).__name__}: {exc})\n")
        return 1
    for line in done:
        sys.stdout.write(f"{service}: queue {line}\n")
    sys.stdout.write(f"{service}: topology declared ({len(specs)} queues)\n")
    return 0
