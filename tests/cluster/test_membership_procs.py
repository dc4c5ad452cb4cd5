"""Membership with real node processes on loopback (preset ``local``): kill -9, SIGSTOP,
partitions, message loss and graceful leave."""

from __future__ import annotations

import asyncio
import signal

from tests.cluster.harness import Cluster


async def test_nodes_join_through_a_seed_and_agree(cluster: Cluster) -> None:
    await cluster.start(4)
    await cluster.converged({"n0", "n1", "n2", "n3"})
    for node in cluster.nodes:
        others = {n.name for n in cluster.nodes} - {node.name}
        joined = {e["name"] for e in node.events if e["ev"] == "member" and e["kind"] == "joined"}
        assert others <= joined


async def test_kill_9_is_declared_dead_by_every_survivor_and_nobody_else(cluster: Cluster) -> None:
    await cluster.start(4)
    await cluster.converged({"n0", "n1", "n2", "n3"})
    victim = cluster.get("n3")
    victim.signal(signal.SIGKILL)
    survivors = [n for n in cluster.nodes if n is not victim]
    for node in survivors:
        await node.wait_for(
            lambda e: e["ev"] == "member" and e["name"] == "n3" and e["kind"] == "failed"
        )
    await cluster.converged({"n0", "n1", "n2"}, among=survivors)
    for node in survivors:
        wrongly = [
            e
            for e in node.events
            if e["ev"] == "member" and e["name"] != "n3" and e["kind"] in ("suspected", "failed")
        ]
        assert wrongly == [], f"{node.name} accused a live node: {wrongly}"


async def test_a_short_sigstop_is_at_most_suspected_and_accuses_nobody(cluster: Cluster) -> None:
    await cluster.start(3)
    await cluster.converged({"n0", "n1", "n2"})
    sleeper = cluster.get("n2")
    mark = len(sleeper.events)
    sleeper.signal(signal.SIGSTOP)
    await asyncio.sleep(0.3)  # the fault under test: a stall shorter than the suspicion timeout
    sleeper.signal(signal.SIGCONT)
    await asyncio.sleep(3)  # let any (wrong) accusation surface
    for node in cluster.nodes[:2]:
        assert node.member_events("n2", "failed") == []
    accusations = [
        e
        for e in sleeper.events[mark:]
        if e["ev"] == "member" and e["kind"] in ("suspected", "failed")
    ]
    assert accusations == [], f"the paused node accused others after resuming: {accusations}"
    await cluster.converged({"n0", "n1", "n2"})


async def test_a_long_sigstop_is_declared_dead_then_comes_back(cluster: Cluster) -> None:
    await cluster.start(3)
    await cluster.converged({"n0", "n1", "n2"})
    sleeper = cluster.get("n2")
    sleeper.signal(signal.SIGSTOP)
    for node in cluster.nodes[:2]:
        await node.wait_for(
            lambda e: e["ev"] == "member" and e["name"] == "n2" and e["kind"] == "failed"
        )
    marks = [len(n.events) for n in cluster.nodes[:2]]
    sleeper.signal(signal.SIGCONT)
    for node, mark in zip(cluster.nodes[:2], marks, strict=True):
        back = await node.wait_for(
            lambda e: (
                e["ev"] == "member" and e["name"] == "n2" and e["kind"] in ("alive", "joined")
            ),
            since=mark,
        )
        assert back["inc"] > 0  # refuted with a higher incarnation
    await cluster.converged({"n0", "n1", "n2"})


async def test_a_partition_splits_the_view_and_heals_into_one(cluster: Cluster) -> None:
    await cluster.start(4)
    everyone = {"n0", "n1", "n2", "n3"}
    await cluster.converged(everyone)
    groups = [["n0", "n1"], ["n2", "n3"]]
    for node in cluster.nodes:
        await node.command(cmd="partition", groups=groups)
    await cluster.converged({"n0", "n1"}, among=cluster.nodes[:2])
    await cluster.converged({"n2", "n3"}, among=cluster.nodes[2:])
    for node in cluster.nodes:
        await node.command(cmd="heal")
    await cluster.converged(everyone, timeout=60)


async def test_five_percent_message_loss_causes_no_false_deaths(cluster: Cluster) -> None:
    await cluster.start(4)
    await cluster.converged({"n0", "n1", "n2", "n3"})
    for node in cluster.nodes:
        await node.command(cmd="drop", p=0.05)
    await asyncio.sleep(10)  # the fault under test runs for a while
    for node in cluster.nodes:
        deaths = [e for e in node.events if e["ev"] == "member" and e["kind"] == "failed"]
        assert deaths == [], f"{node.name} declared live nodes dead: {deaths}"


async def test_a_graceful_leave_is_left_everywhere_never_failed(cluster: Cluster) -> None:
    await cluster.start(3)
    await cluster.converged({"n0", "n1", "n2"})
    leaver = cluster.get("n2")
    await leaver.command(cmd="leave")
    for node in cluster.nodes[:2]:
        await node.wait_for(
            lambda e: e["ev"] == "member" and e["name"] == "n2" and e["kind"] == "left"
        )
        assert node.member_events("n2", "failed") == []
    await cluster.converged({"n0", "n1"}, among=cluster.nodes[:2])


async def test_a_restarted_node_is_a_new_incarnation(cluster: Cluster) -> None:
    await cluster.start(3)
    await cluster.converged({"n0", "n1", "n2"})
    old = cluster.get("n2")
    port, old_boot = old.port, old.boot
    old.signal(signal.SIGKILL)
    await old.proc.wait()  # type: ignore[union-attr]
    await old.close()
    marks = [len(n.events) for n in cluster.nodes[:2]]
    await old.start(seeds=[cluster.nodes[0].address], port=port)
    assert old.boot != old_boot
    for node, mark in zip(cluster.nodes[:2], marks, strict=True):
        await node.wait_for(
            lambda e: (
                e["ev"] == "member"
                and e["name"] == "n2"
                and e["boot"] == old.boot
                and e["kind"] in ("joined", "alive", "updated")
            ),
            since=mark,
        )
    await cluster.converged({"n0", "n1", "n2"})


async def test_hub_join_and_leave_hooks_follow_membership(cluster: Cluster) -> None:
    await cluster.start(3, hub="orders")
    await cluster.converged({"n0", "n1", "n2"})
    first = cluster.get("n0")
    for other in ("n1", "n2"):
        await first.wait_for(
            lambda e, o=other: (
                e["ev"] == "hook" and e["hook"] == "post_cluster_join" and e["data"] == o
            )
        )
    cluster.get("n2").signal(signal.SIGKILL)
    pre = await first.wait_for(lambda e: e["ev"] == "hook" and e["hook"] == "pre_cluster_leave")
    post = await first.wait_for(lambda e: e["ev"] == "hook" and e["hook"] == "post_cluster_leave")
    assert pre["data"] == post["data"] == "n2"
    assert first.events.index(pre) < first.events.index(post)
