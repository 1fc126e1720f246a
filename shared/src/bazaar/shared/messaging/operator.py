"""The `parked` command of every service: list, show and re-drive parked messages."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from bazaar.shared.messaging.consumer import Subscription
from bazaar.shared.messaging.parking import list_parked, redrive_parked


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
