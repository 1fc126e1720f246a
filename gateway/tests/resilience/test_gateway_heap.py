"""The serving process keeps the garbage collector off the hot path (see cli.settle_heap)."""

from __future__ import annotations

import gc

from aiohttp import web

from bazaar.gateway.cli import GC_THRESHOLDS, settle_heap


async def test_serving_freezes_what_startup_left_alive_and_collects_young_objects_rarely() -> None:
    before = gc.get_threshold()
    survivor = [object()]  # alive before serving: must leave the collector's generations
    try:
        await settle_heap(web.Application())
        assert gc.get_freeze_count() > 0
        collected = (gc.get_objects(generation) for generation in range(3))
        assert not any(o is survivor for objects in collected for o in objects)
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > before[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
