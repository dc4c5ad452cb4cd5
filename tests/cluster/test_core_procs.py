"""Exactness of the distributed hub under churn, with real node processes on loopback.

Each test reproduces one failure of issue 7 ("Why") from outside, as a user would: kill -9
(SIGKILL), SIGSTOP/SIGCONT, a restart under the same name and port, and partitions through the
nodes' fault injection (``Faults``, the ``partition``/``heal`` commands of the node process). The
outcome checked is always the same contract: every child runs exactly once cluster-wide, on its
ring owner among the live nodes (``ConsistentHashing(nodes=...).belongs_to(cid)[0]``), every
node's registry is identical and says exactly that, and children were started again only where
a node died (``PROCESS_STARTUPS`` counts per child id).

Deadlines (30 s) only turn a hang into a failure; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.cluster.harness import Cluster, NodeProc, on, owner, owners

HUB = "orders"
DEADLINE = 30.0


async def start(node: NodeProc, n: int, prefix: str = "c") -> set[str]:
    """Start ``n`` Counters ``prefix0..`` from ``node``; every one must start."""
    reply = await node.command(cmd="start", n=n, prefix=prefix)
    assert reply["ok"] == n, reply
    return {f"{prefix}{i}" for i in range(n)}


# -- two deaths within one detection period ----------------------------------------------------


@pytest.mark.parametrize(
    ("size", "children"),
    [pytest.param(4, 400, id="2_of_4_400_children"), pytest.param(3, 60, id="2_of_3_60_children")],
)
async def test_kill_9_of_two_nodes_at_once_restarts_every_lost_child_exactly_once(
    cluster: Cluster, size: int, children: int
) -> None:
    nodes = await cluster.start(size, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], children)
    before = await cluster.exactly_once(nodes, ids)
    victims, survivors = nodes[-2:], nodes[:-2]
    lost = on(before.running(), {v.name for v in victims})
    assert lost
    starts_before = await cluster.startups(survivors)
    for victim in victims:  # both within one detection period
        victim.signal(signal.SIGKILL)
    await asyncio.gather(*(v.kill() for v in victims))
    await cluster.exactly_once(survivors, ids, lost=lost, timeout=DEADLINE)
    starts = await cluster.new_starts(survivors, starts_before, expect=lost)
    assert starts == dict.fromkeys(lost, 1), (
        f"{len(lost)} lost: {sum(1 for c in lost if c not in starts)} never restarted, "
        f"{sum(1 for c, n in starts.items() if n > 1)} restarted more than once, "
        f"{len(set(starts) - lost)} children of survivors restarted"
    )


# -- a restart under the same name and port ----------------------------------------------------


async def test_a_node_restarted_at_once_under_its_name_and_port_gets_every_child_back(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(4, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 300)
    before = await cluster.exactly_once(nodes, ids)
    victim, survivors = nodes[-1], nodes[:-1]
    lost = on(before.running(), {victim.name})
    old_boot = victim.boot
    starts_before = await cluster.startups(survivors)
    await victim.kill()
    await victim.restart()  # right away: same name, same port, a new boot
    assert victim.boot != old_boot
    await cluster.exactly_once(nodes, ids, lost=lost, timeout=DEADLINE)
    starts = await cluster.new_starts(survivors, starts_before)
    assert set(starts) <= lost, f"children of the survivors restarted: {sorted(set(starts) - lost)}"


# -- a joiner that dies right after it took over children ---------------------------------------


async def joiner_dies_after_its_first_migration(cluster: Cluster) -> None:
    nodes = await cluster.start(3, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 300)
    await cluster.exactly_once(nodes, ids)
    name = f"n{len(cluster.nodes)}"
    assert {cid for cid, o in owners([*(n.name for n in nodes), name], ids).items() if o == name}

    def arm(proc: NodeProc) -> None:  # kill -9 in the reader, the moment the hook is printed
        proc.on_event(lambda e: e["ev"] == "migrated", lambda: proc.signal(signal.SIGKILL))

    joiner = await cluster.add(name, prepare=arm, hub=HUB)
    await joiner.wait_for(lambda e: e["ev"] == "migrated", timeout=DEADLINE)
    assert joiner.proc is not None
    await joiner.proc.wait()
    taken = {cid for e in joiner.of("migrated") for cid in e["ids"]}
    assert taken
    await cluster.exactly_once(nodes, ids, timeout=DEADLINE, lost=taken)


async def test_a_joiner_killed_right_after_its_first_migration_loses_no_child(
    cluster: Cluster,
) -> None:
    await joiner_dies_after_its_first_migration(cluster)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(8))
async def test_a_joiner_killed_right_after_its_first_migration_loses_no_child_repeated(
    cluster: Cluster, run: int
) -> None:
    await joiner_dies_after_its_first_migration(cluster)


# -- a partition, and a pause ------------------------------------------------------------------


async def partition_then_heal(cluster: Cluster, size: int, children: int) -> None:
    nodes = await cluster.start(size, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], children)
    await cluster.exactly_once(nodes, ids)
    half = size // 2
    sides = [nodes[:half], nodes[half:]]
    groups = [[n.name for n in side] for side in sides]
    starts_before = await cluster.startups(nodes)
    for node in nodes:
        await node.command(cmd="partition", groups=groups)
    # the split: each side declares the other dead, then serves every child by itself
    for side in sides:
        await cluster.hub_converged(side, timeout=DEADLINE)
    problems = []
    for side, names in zip(sides, groups, strict=True):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            views = [await n.registry() for n in side]
            served = [sum(1 for c in ids if set(v.get(c, ())) & set(names)) for v in views]
            if all(s == len(ids) for s in served):
                break
            if loop.time() > deadline:
                problems.append(f"during the split {names} served only {served} of {len(ids)}")
                break
            await asyncio.sleep(0.1)
    during = await cluster.new_starts(nodes, starts_before)
    for node in nodes:
        await node.command(cmd="heal")
    try:
        await cluster.exactly_once(nodes, ids, timeout=DEADLINE)
    except AssertionError as exc:
        problems.append(f"after the heal: {exc}")
    starts = await cluster.new_starts(nodes, starts_before, expect=ids)
    if starts != dict.fromkeys(ids, 1):
        total, split = sum(starts.values()), sum(during.values())
        problems.append(
            f"{total} starts for {len(ids)} children ({total - len(ids):+d} beyond one per "
            f"child failed over during the split): {split} during the split, {total - split} "
            f"after the heal; {sum(1 for n in starts.values() if n > 1)} started more than "
            f"once, {len(ids - set(starts))} never"
        )
    assert problems == [], "\n".join(problems)


async def test_a_2_2_partition_serves_every_child_on_both_sides_and_heals_to_exactly_once(
    cluster: Cluster,
) -> None:
    await partition_then_heal(cluster, 4, 400)


@pytest.mark.slow
async def test_a_3_3_partition_of_2000_children_heals_to_exactly_once(cluster: Cluster) -> None:
    await partition_then_heal(cluster, 6, 2000)


async def test_a_sigstopped_node_resumes_and_the_cluster_converges_without_extra_starts(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(3, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 300)
    before = await cluster.exactly_once(nodes, ids)
    sleeper, others = nodes[-1], nodes[:-1]
    paused = on(before.running(), {sleeper.name})
    starts_before = await cluster.startups(nodes)
    marks = [len(n.events) for n in others]
    sleeper.signal(signal.SIGSTOP)
    await asyncio.sleep(3.0)  # the fault under test: a 3 s stall
    sleeper.signal(signal.SIGCONT)
    await cluster.exactly_once(nodes, ids, timeout=DEADLINE)
    declared = [
        any(e["name"] == sleeper.name and e["kind"] == "failed" for e in n.of("member", m))
        for n, m in zip(others, marks, strict=True)
    ]
    starts = await cluster.new_starts(
        nodes, starts_before, expect=paused if all(declared) else set()
    )
    assert set(starts) <= paused, f"children of running nodes restarted: {set(starts) - paused}"
    assert all(n == 1 for n in starts.values()), (
        f"{sum(starts.values())} starts for {len(paused)} children of the paused node "
        f"(declared dead by {sum(declared)} of {len(others)}); "
        f"{sum(1 for n in starts.values() if n > 1)} started more than once"
    )
    if all(declared):
        assert set(starts) == paused


# -- a child that cannot start on its failover node --------------------------------------------


async def test_a_child_whose_init_fails_on_the_failover_node_is_retried_then_buried_everywhere(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(3, hub=HUB)
    await cluster.hub_converged(nodes)
    first, bad, victim = nodes
    full = [n.name for n in nodes]
    rest = [first.name, bad.name]
    # children that run on the victim now and whose failover owner is the node they fail on
    doomed = [
        cid
        for cid in (f"f{i}" for i in range(2000))
        if owner(full, cid) == victim.name and owner(rest, cid) == bad.name
    ][:3]
    assert len(doomed) == 3
    max_restarts = 2
    reply = await first.command(
        cmd="start",
        ids=doomed,
        proc="tests.procs:FailsOn",
        args=[bad.name],
        spec={"max_restarts": max_restarts, "max_seconds": 60.0},
    )
    assert reply["ok"] == 3, reply
    assert all(where == [victim.name] for where in reply["placed"].values()), reply["placed"]
    ids = await start(first, 60)
    await cluster.exactly_once(nodes, ids | set(doomed))
    survivors = [first, bad]
    marks = [len(n.events) for n in survivors]
    await victim.kill()
    for node, mark in zip(survivors, marks, strict=True):
        for cid in doomed:
            await node.wait_for(
                lambda e, c=cid: e["ev"] == "buried_hook" and e["id"] == c,
                since=mark,
                timeout=DEADLINE,
            )
    tried = {e["id"]: e["attempts"] for e in bad.of("buried_hook", marks[1])}
    assert tried == dict.fromkeys(doomed, max_restarts + 1)  # retried, then buried
    for node in survivors:
        assert set((await node.command(cmd="buried"))["ids"]) == set(doomed), node.name
    await cluster.exactly_once(survivors, ids, timeout=DEADLINE)  # and runs nowhere


# -- a call into the detection window ----------------------------------------------------------


async def test_a_call_to_a_child_of_a_node_killed_before_detection_fails_over_or_names_the_node(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(3, hub=HUB)
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 60)
    before = await cluster.exactly_once(nodes, ids)
    caller, victim = nodes[0], nodes[-1]
    targets = sorted(on(before.running(), {victim.name}))
    assert targets
    mark = len(caller.events)
    victim.signal(signal.SIGKILL)
    reply = await caller.command(cmd="call", ids=targets, timeout=15.0)
    failed = await caller.wait_for(
        lambda e: e["ev"] == "member" and e["name"] == victim.name and e["kind"] == "failed",
        since=mark,
        timeout=DEADLINE,
    )
    assert reply["began"] < failed["t"], "the calls began after detection: nothing was tested"
    wrong = {}
    for cid, result in reply["results"].items():
        if result["ok"]:
            if result["value"] != int(cid[1:]):  # a Counter restarted from its spec
                wrong[cid] = result
        elif not (
            result["hub_error"]
            and result["exported"]
            and result["name"] != "LinkError"
            and victim.name in result["message"]
        ):
            wrong[cid] = result
    assert wrong == {}, (
        f"{len(wrong)} of {len(targets)} calls: {sorted({r.get('type') for r in wrong.values()})}"
        f" e.g. {next(iter(wrong.values()))}"
    )
