"""Process-wide settings for a service that holds many children.

Python's cyclic garbage collector scans every live container object in a full collection, and
it runs one each time the heap has grown by a quarter. A node that runs 50,000 children and
holds registry entries for 100,000 has about 1.1 million such objects (17 per running child, 3
per entry): its full collections take 0.16-0.23 s each, pause the event loop for that long
(long enough, a few in a row, to get the node suspected by its peers' failure detectors), and
took up to 2.8 s of its CPU over a 100,000-child start and failover
(``scripts/bench/bench_core.py`` reports both settings side by side; ``docs/operations.md``).

:func:`tune_gc` is opt-in because it is process-wide: call it once, early in ``main()``, in a
service that embeds a hub with tens of thousands of children. ``processhub node`` calls it
unless given ``--gc default``.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["ADVISE_AT", "GC_THRESHOLDS", "gc_advice", "tune_gc"]

logger = logging.getLogger(__name__)

#: (young, middle, full): a young collection every 1,000 allocations and a middle one every 10
#: young ones, close to Python's own (small young generations stay in the CPU's caches: 100,000
#: children on 3 in-process hubs spent 0.7-0.9 s in the collector with these, 1.4 s with
#: (10,000, 10, 1,000)), and a full one at most every 10,000 middle ones (10^8 allocations)
#: instead of whenever the heap grew by a quarter (10.4 s)
GC_THRESHOLDS = (1_000, 10, 10_000)


#: a cluster node whose registry holds this many entries with a full-collection threshold of at
#: most :data:`DEFAULT_FULL` (Python's is 10) logs :func:`gc_advice` once
ADVISE_AT = 20_000
DEFAULT_FULL = 10


def gc_advice(entries: int) -> str | None:
    """The warning a cluster node logs once when its registry holds ``entries`` (at least
    :data:`ADVISE_AT`) while the collector runs full collections as often as Python's
    default thresholds make it; ``None`` otherwise (a small registry, raised thresholds, or
    the collector disabled)."""
    if entries < ADVISE_AT or not gc.isenabled() or gc.get_threshold()[2] > DEFAULT_FULL:
        return None
    return (
        f"the registry holds {entries:,} entries with the garbage collector thresholds "
        f"{gc.get_threshold()}: its full collections can pause this node long enough for its "
        "peers to declare it failed and start its children again elsewhere; call "
        "hub.tune_gc() early in main() (docs/operations.md, 'Large hubs')"
    )


def tune_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> tuple[int, int, int]:
    """Set the collector's thresholds (see :data:`GC_THRESHOLDS`); returns the previous ones.

    Memory that is not part of a reference cycle is freed at once as always (reference
    counting); only cyclic garbage that survived two collections waits longer for a full
    collection. ``gc.collect()`` still runs one whenever called."""
    if len(thresholds) != 3 or not all(isinstance(t, int) and t > 0 for t in thresholds):
        raise ValueError("thresholds must be three positive integers")
    previous = gc.get_threshold()
    gc.set_threshold(*thresholds)
    logger.info("garbage collector thresholds %s (were %s)", thresholds, previous)
    return (previous[0], previous[1], previous[2])
