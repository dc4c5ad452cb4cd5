"""Prometheus metrics of a node and its hubs (optional: ``pip install 'processhub[metrics]'``).

:class:`NodeMetrics` owns a per-node ``CollectorRegistry`` (never the global one) with one
custom collector that reads the current state and the existing counters at scrape time: the
node's membership table and message counters, its links' error counts and request latency
histograms, and per hub the supervisor's children, the :class:`~hub.ops.HubCounters`, the hook
statistics, the registry partitions and the planner's executed actions. Nothing is counted on a
hot path for the metrics' sake beyond those integer counters.

Naming follows Prometheus' conventions: ``processhub_`` prefix, base units (seconds), ``_total``
for counters, labels by hub id, state, kind or peer node name, never by child id. The full list
is in ``docs/operations.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from . import __version__
from .cluster.stats import count_states

if TYPE_CHECKING:
    from .cluster.node import Node

__all__ = ["CHILD_STATES", "NodeMetrics"]

#: Every state a local child can be in (each is reported, zeros included).
CHILD_STATES = ("starting", "running", "restarting", "stopping")
_MEMBER_STATES = ("alive", "suspect", "dead", "left")
_ACTIONS = ("Start", "Stop", "Move", "Conflict", "Bury")  # hub.planner's action types


class NodeMetrics:
    """The metrics of one node (or of one standalone hub, with ``node=None``)."""

    def __init__(self, node: Node | None, hubs: Callable[[], Sequence[Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(node, hubs))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition (text format, or what ``accept`` asks for) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _Collector:
    def __init__(self, node: Node | None, hubs: Callable[[], Sequence[Any]]) -> None:
        self.node = node
        self.hubs = hubs

    def describe(self) -> list[Metric]:
        return []  # a dynamic collector: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        node = self.node
        info = GaugeMetricFamily(
            "processhub_build_info", "processhub version (always 1)", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        if node is not None:
            yield from self._node(node)
        hubs = list(self.hubs())
        yield from self._hubs(hubs)

    # -- the node --------------------------------------------------------------------------

    def _node(self, node: Node) -> Iterator[Metric]:
        running = node.running
        yield _gauge("processhub_node_up", "1 while the node runs", value=1 if running else 0)
        yield _gauge(
            "processhub_node_joined",
            "1 once the node joined a cluster (always 1 for a node without seeds)",
            value=1 if node.joined else 0,
        )
        members = GaugeMetricFamily(
            "processhub_members", "members known to this node, by state", labels=["state"]
        )
        counts = count_states(m.state.name.lower() for m in node.members()) if running else {}
        for state in _MEMBER_STATES:
            members.add_metric([state], counts.get(state, 0))
        yield members
        if running:
            yield _gauge(
                "processhub_membership_health",
                "Lifeguard local health score (0 is healthy)",
                value=node.membership.health,
            )
        events = CounterMetricFamily(
            "processhub_member_events_total",
            "membership transitions this node observed, by kind",
            labels=["kind"],
        )
        for kind, n in sorted(node.member_events.items()):
            events.add_metric([kind], n)
        yield events
        suspicions = CounterMetricFamily(
            "processhub_suspicions_total", "members this node saw become suspect"
        )
        suspicions.add_metric([], node.member_events.get("suspected", 0))
        yield suspicions
        stats = node.stats
        messages = CounterMetricFamily(
            "processhub_membership_messages_total",
            "membership messages, by direction",
            labels=["direction"],
        )
        messages.add_metric(["sent"], stats["sent"])
        messages.add_metric(["received"], stats["received"])
        yield messages
        data = CounterMetricFamily(
            "processhub_membership_bytes_total",
            "membership bytes, by direction",
            labels=["direction"],
        )
        data.add_metric(["out"], stats["bytes_out"])
        data.add_metric(["in"], stats["bytes_in"])
        yield data
        refused = CounterMetricFamily(
            "processhub_membership_refused_total",
            "peer messages refused (bad signature, malformed, oversized, not loopback)",
        )
        refused.add_metric([], stats["refused"])
        yield refused
        dropped = CounterMetricFamily(
            "processhub_membership_dropped_total", "sends dropped: too many in flight"
        )
        dropped.add_metric([], stats["overflow"])
        yield dropped
        links = node.links
        errors = CounterMetricFamily(
            "processhub_link_errors_total",
            "hub link errors: dial (could not open), broken (an open link broke), timeout",
            labels=["kind"],
        )
        for kind in ("dial", "broken", "timeout"):
            errors.add_metric([kind], links.errors.get(kind, 0))
        yield errors
        latency = HistogramMetricFamily(
            "processhub_remote_request_duration_seconds",
            "round trip of answered requests to peers (call, start, stop, ...), by hub and kind",
            labels=["hub", "kind"],
        )
        for (hub_id, kind), histogram in sorted(links.latency.items()):
            latency.add_metric(
                [hub_id, kind], buckets=histogram.cumulative(), sum_value=histogram.total
            )
        yield latency

    # -- the hubs --------------------------------------------------------------------------

    def _hubs(self, hubs: list[Any]) -> Iterator[Metric]:
        children = GaugeMetricFamily(
            "processhub_children",
            "children on this node, by hub and state",
            labels=["hub", "state"],
        )
        buried_now = GaugeMetricFamily(
            "processhub_buried_children",
            "children buried on this node (kept in memory, bounded)",
            labels=["hub"],
        )
        up = GaugeMetricFamily(
            "processhub_hub_up", "1 while the hub runs (not draining)", labels=["hub"]
        )
        locked = GaugeMetricFamily(
            "processhub_hub_locked", "1 while the partition strategy locks the hub", labels=["hub"]
        )
        hub_members = GaugeMetricFamily(
            "processhub_hub_members",
            "live nodes hosting the hub, this one included",
            labels=["hub"],
        )
        unsynced = GaugeMetricFamily(
            "processhub_registry_unsynced_peers",
            "live peers whose registry partition this node does not have yet, and members a peer "
            "lists that this node does not know yet",
            labels=["hub"],
        )
        entries = GaugeMetricFamily(
            "processhub_registry_entries",
            "registry entries held here, by hub and by the node that writes the partition",
            labels=["hub", "node"],
        )
        versions = GaugeMetricFamily(
            "processhub_registry_version",
            "version of each registry partition held here (its writer increments it)",
            labels=["hub", "node"],
        )
        desired = GaugeMetricFamily(
            "processhub_desired_records",
            "desired-state records held here (what should run, tombstones included)",
            labels=["hub"],
        )
        names = {
            "starts": ("processhub_child_starts_total", "child instances started here"),
            "restarts": ("processhub_child_restarts_total", "restarts in place after a crash"),
            "crashes": ("processhub_child_crashes_total", "crashes and failed starts"),
            "buried": ("processhub_children_buried_total", "children buried"),
            "conflicts": ("processhub_child_conflicts_total", "duplicate copies resolved"),
        }
        counters = {
            key: CounterMetricFamily(name, doc, labels=["hub"])
            for key, (name, doc) in names.items()
        }
        migrations = CounterMetricFamily(
            "processhub_migrations_total",
            "child migrations: arrived here, or failed to move from here; by kind (cold, hot)",
            labels=["hub", "kind", "outcome"],
        )
        dispatches = CounterMetricFamily(
            "processhub_hook_dispatches_total",
            "hook dispatches, by hub and event",
            labels=["hub", "event"],
        )
        runs = CounterMetricFamily(
            "processhub_hook_handler_runs_total", "hook handler calls", labels=["hub", "event"]
        )
        failures = CounterMetricFamily(
            "processhub_hook_failures_total",
            "hook handlers that raised (or were dropped)",
            labels=["hub", "event"],
        )
        actions = CounterMetricFamily(
            "processhub_planner_actions_total",
            "actions the planner decided and this node executed, by kind",
            labels=["hub", "action"],
        )
        lost = CounterMetricFamily(
            "processhub_messages_dropped_total",
            "casts by child id this node could not deliver or forward (the child never came "
            "back, a link failed, a held buffer was full, or the message could not travel)",
            labels=["hub"],
        )
        for hub in hubs:
            hid = hub.hub_id
            runtime = hub.runtime
            states = count_states(c.state for c in runtime.children().values())
            for state in CHILD_STATES:
                children.add_metric([hid, state], states.get(state, 0))
            buried_now.add_metric([hid], len(runtime.supervisor.buried()))
            up.add_metric([hid], 1 if hub.state == "running" else 0)
            locked.add_metric([hid], 1 if hub.is_locked() else 0)
            hub_members.add_metric([hid], len(hub.nodes(include_local=True)))
            unsynced.add_metric([hid], len(hub.unsynced_peers()))
            for name, part in sorted(runtime.registry.partitions.items()):
                entries.add_metric([hid, name], len(part.entries))
                versions.add_metric([hid, name], part.version)
            coordinator = hub.coordinator
            if coordinator is not None:
                desired.add_metric([hid], len(coordinator.desired))
                lost.add_metric([hid], coordinator.messenger.lost)
                planned = coordinator.planned
                for action in sorted({*_ACTIONS, *planned}):
                    actions.add_metric([hid, action.lower()], planned.get(action, 0))
            kept = hub.counters
            if kept is not None:
                for key, family in counters.items():
                    family.add_metric([hid], getattr(kept, key))
                kind = hub.strategies.migration.kind
                migrations.add_metric([hid, kind, "arrived"], kept.migrated_in)
                migrations.add_metric([hid, kind, "failed"], kept.migration_failed)
            hooks = hub.hooks
            for event in hooks.events():
                st = hooks.stats(event)
                label = str(event)
                dispatches.add_metric([hid, label], st.dispatched)
                runs.add_metric([hid, label], st.handlers_run)
                failures.add_metric([hid, label], st.failures)
        yield children
        yield buried_now
        yield up
        yield locked
        yield hub_members
        yield unsynced
        yield entries
        yield versions
        yield desired
        yield from counters.values()
        yield migrations
        yield dispatches
        yield runs
        yield failures
        yield actions
        yield lost


def _gauge(name: str, doc: str, *, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)
