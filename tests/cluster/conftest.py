from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.cluster.harness import Cluster
from tests.cluster.inproc import Nodes


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    """Nodes and hubs in this process (``tests/cluster/inproc.py``), healed and closed after."""
    c = Nodes()
    try:
        yield c
    finally:
        c.heal()
        await c.close()
