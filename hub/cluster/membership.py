"""Cluster membership: a pure SWIM + Lifeguard state machine.

No I/O, no clock, no global randomness: every call takes ``now`` (monotonic seconds) and returns
the outputs to act on (:class:`Send`, :class:`MemberEvent`, :class:`NameConflict`); randomness
comes from the ``random.Random`` given to the constructor. The shell delivers messages with
:meth:`Membership.receive` and calls :meth:`Membership.tick` at :meth:`Membership.next_deadline`
(never more than ``gossip_interval`` away). The design follows HashiCorp memberlist and the SWIM
and Lifeguard papers:

* **Probing.** Members are probed in randomised round-robin order (shuffle, walk, reshuffle), one
  per probe interval. A direct :class:`~.messages.Ping` waits ``probe_timeout``; then
  ``indirect_checks`` other members get a :class:`~.messages.PingReq` naming the target; they
  ping it (address from their own table) and forward its ack, or send a
  :class:`~.messages.Nack` at ``nack_fraction`` of their probe timeout. No ack by the end of the
  interval makes the target suspect.
* **Lifeguard.** A local health score (0 .. ``awareness_max_multiplier - 1``) drops by one per
  acked probe and rises by one per refutation and per missing nack of a failed probe (by one when
  no nack was expected); probe interval and timeout are multiplied by ``health + 1``. The
  suspicion timeout starts at ``suspicion_max_timeout_mult`` times :func:`suspicion_timeout` and
  shrinks logarithmically towards it as distinct members confirm the suspicion
  (:func:`remaining_suspicion_time`). Buddy system: a ping to a suspect carries the suspicion,
  and every member that starts suspecting X also tells X directly, so X refutes at once; a
  suspect that sends this node anything is told again (at most once a probe interval): after a
  partition heals, the suspicion's gossip may have run out of retransmissions, and the next
  probe of X can come after the suspicion times out.
* **Incarnations.** Alive beats suspect/dead only with a strictly higher incarnation; suspect
  and dead apply at an equal or higher one; a dead or left member stays so until a
  higher-incarnation alive arrives; a push-pull entry that says dead is taken as a suspicion
  (the accused may still refute). A member that hears it is suspected or dead refutes with a
  higher incarnation and answers the accuser directly with its Alive. An accusation older than
  its incarnation means its refutation missed the sender (random gossip can miss one member,
  which would then convict a live node): it answers the same way and gossips its Alive again,
  first in line, so that the ack to a buddy ping carries it.
* **Dissemination.** Accepted news is queued (one item per member, newer replaces older) and
  piggybacked on pings, acks and ping-reqs, and sent every ``gossip_interval`` to
  ``gossip_nodes`` random members (recently dead ones included), each item at most
  :func:`retransmit_limit` times, least-sent first. Every ``push_pull_interval`` (scaled up past
  32 members) a random member and this node exchange their full state.
* **Join** sends a push-pull to every seed, retried with capped exponential backoff until a
  push-pull answer arrives or another live member is known. **Reconnect:** every
  ``reconnect_interval`` a push-pull goes to one random remembered DEAD member, so the two sides
  of a healed partition learn they were declared dead, refute, and merge.
* **Leave** gossips :class:`~.messages.Dead` with ``left=True`` about itself (directly to up to
  ``leave_fanout`` members, and through the gossip queue); others mark the member LEFT ("left"
  event, never "failed") and stop probing it.
* **Pause guard.** A call whose ``now`` is more than ``pause_threshold`` after the previous call
  means this process was stalled: the probe in flight is dropped (no suspicion, no health change),
  relayed pings and identity challenges are dropped, and every suspicion timer restarts from now.
  Nothing is convicted on evidence gathered across the stall; others' gossip is still applied.
  If the others declared the stalled node dead meanwhile, it hears so (their gossip, push-pull
  or reconnect), refutes with a higher incarnation and is ALIVE again ("alive" events).
* **Identity.** A member is ``(name, boot_id)``; the table holds one boot per name. News about a
  boot that is not the one held is ignored, except an Alive of another boot: if the held boot is
  dead or left, or the claim comes straight from that boot at the held address (a restart), the
  new boot replaces the old ("failed" for the old if it was live, then "joined"). Otherwise both
  boots are pinged (a *challenge*): only the new answers -> it replaces the old; only the old
  answers -> the claim was stale and is ignored; both answer -> :class:`NameConflict`, the held
  one stays and the rival is ignored for ``push_pull_interval``. Claims on this node's own name
  by another boot are challenged the same way. Pings for another boot of this node are not
  answered.
* **Bounds.** At most ``max_members`` members (a full table first evicts the longest-dead
  member; otherwise a new member is refused: a push-pull must fit in one message of
  :data:`~.codec.MAX_MESSAGE_BYTES`), a queue of at most one item per member, meta of at most
  ``max_meta_bytes``, ``max_gossip_per_message`` items per message, bounded relays and
  challenges; DEAD and LEFT members are forgotten ``dead_reclaim`` seconds after their change.

Events (one per transition; each carries the member as it is now, meta included, and its previous
state): ``joined`` (first seen alive), ``updated`` (meta or address of a live member changed),
``suspected``, ``alive`` (back from suspect, dead or left), ``failed`` (dead), ``left``. There are
no events about this node itself.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from .codec import CodecError, meta_size, normalize_meta
from .messages import (
    Ack,
    Address,
    Alive,
    Broadcast,
    Dead,
    Gossip,
    MemberState,
    Message,
    Nack,
    NodeId,
    Ping,
    PingReq,
    PushPull,
    State,
    Suspect,
)

__all__ = [
    "LAN",
    "LOCAL",
    "PRESETS",
    "BroadcastQueue",
    "Config",
    "Member",
    "MemberEvent",
    "Membership",
    "NameConflict",
    "Output",
    "Send",
    "expected_confirmations",
    "join_backoff",
    "push_pull_scale",
    "remaining_suspicion_time",
    "retransmit_limit",
    "suspicion_timeout",
]

logger = logging.getLogger(__name__)

MAX_SEQ = 2**32 - 1
MAX_RELAYS = 256  # ping-reqs being served at once; the oldest is dropped past this
MAX_CHALLENGES = 32  # identity challenges at once; further claims wait for a later gossip
MAX_NOTES = 1024  # remembered retired and rival boots; the oldest note is dropped past this
_LIVE = (State.ALIVE, State.SUSPECT)
_GONE = (State.DEAD, State.LEFT)


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """Membership timings (seconds) and bounds. The defaults are the ``lan`` preset, which is
    memberlist's ``DefaultLANConfig``; ``local`` scales the timings down five times.

    ``probe_interval``/``probe_timeout``: one probe per interval, indirect probes after the
    timeout (both scaled by ``health + 1``). ``indirect_checks``: ping-req fan-out.
    ``nack_fraction``: when an intermediary nacks. ``suspicion_mult``,
    ``suspicion_max_timeout_mult``: see :func:`suspicion_timeout`. ``retransmit_mult``: see
    :func:`retransmit_limit`. ``gossip_interval``/``gossip_nodes``: periodic gossip fan-out;
    ``gossip_to_the_dead``: how long dead members still receive it. ``push_pull_interval``:
    full-state sync. ``awareness_max_multiplier``: the health score stays below it.
    ``reconnect_interval``: push-pull to a random dead member. ``dead_reclaim``: dead and left
    members are forgotten after this. ``pause_threshold``: a gap between calls longer than this
    is a stall (see the pause guard). ``max_meta_bytes``, ``max_gossip_per_message``,
    ``max_members``: bounds. ``join_retry_base``/``join_retry_cap``: join backoff.
    ``leave_fanout``: members told directly of a graceful leave.
    """

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    nack_fraction: float = 0.8  # a ping-req intermediary nacks at this fraction of probe_timeout
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead: float = 30.0  # dead members still get gossip this long
    push_pull_interval: float = 30.0
    awareness_max_multiplier: int = 8
    reconnect_interval: float = 10.0
    dead_reclaim: float = 3600.0
    pause_threshold: float = 1.0
    max_meta_bytes: int = 512
    max_gossip_per_message: int = 16
    max_members: int = 512
    join_retry_base: float = 1.0
    join_retry_cap: float = 30.0
    leave_fanout: int = 32

    def __post_init__(self) -> None:
        positive = (
            "probe_interval",
            "probe_timeout",
            "gossip_interval",
            "push_pull_interval",
            "reconnect_interval",
            "dead_reclaim",
            "pause_threshold",
            "join_retry_base",
            "join_retry_cap",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"Config.{name} must be positive")
        at_least_one = (
            "suspicion_mult",
            "suspicion_max_timeout_mult",
            "retransmit_mult",
            "gossip_nodes",
            "awareness_max_multiplier",
            "max_meta_bytes",
            "max_gossip_per_message",
            "leave_fanout",
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ValueError(f"Config.{name} must be at least 1")
        if self.indirect_checks < 0 or self.gossip_to_the_dead < 0:
            raise ValueError("Config.indirect_checks and gossip_to_the_dead must be >= 0")
        if self.max_members < 2:
            raise ValueError("Config.max_members must be at least 2")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("Config.probe_timeout must be shorter than probe_interval")
        if not 0 < self.nack_fraction < 1:
            raise ValueError("Config.nack_fraction must be between 0 and 1")
        if self.pause_threshold <= 2 * self.gossip_interval:
            raise ValueError("Config.pause_threshold must exceed twice the gossip_interval")
        if self.join_retry_cap < self.join_retry_base:
            raise ValueError("Config.join_retry_cap must be at least join_retry_base")


LAN = Config()
LOCAL = Config(
    probe_interval=0.2,
    probe_timeout=0.1,
    gossip_interval=0.05,
    gossip_to_the_dead=6.0,
    push_pull_interval=5.0,
    reconnect_interval=2.0,
    dead_reclaim=120.0,
    pause_threshold=0.3,
    join_retry_base=0.2,
    join_retry_cap=5.0,
)
PRESETS: Mapping[str, Config] = MappingProxyType({"lan": LAN, "local": LOCAL})


# -- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """One member as this node sees it; ``since`` is when its state last changed."""

    node: NodeId
    address: Address
    incarnation: int
    state: State
    meta: Mapping[str, Any]
    since: float

    def __hash__(self) -> int:
        return hash((self.node, self.address, self.incarnation, self.state))

    @property
    def name(self) -> str:
        return self.node.name


@dataclass(frozen=True, slots=True)
class Send:
    """Send ``message`` to ``to``. ``target`` is the member meant (``None`` for a seed whose
    identity is unknown). A reply to a received message has ``target`` and ``to`` equal to that
    message's sender and sender address."""

    to: Address
    target: NodeId | None
    message: Message


EventKind: TypeAlias = Literal["joined", "updated", "suspected", "alive", "failed", "left"]


@dataclass(frozen=True, slots=True)
class MemberEvent:
    """A member changed: ``member`` is its new view, ``previous`` its state before (``None`` when
    first seen)."""

    kind: EventKind
    member: Member
    previous: State | None = None


@dataclass(frozen=True, slots=True)
class NameConflict:
    """Two live boots claim one name from different addresses; ``existing`` is kept."""

    name: str
    existing: Member
    other: Member


Output: TypeAlias = Send | MemberEvent | NameConflict


# -- pure formulas -----------------------------------------------------------------------------


def suspicion_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """memberlist's minimum suspicion timeout: ``mult * max(1, log10(n)) * interval``."""
    return suspicion_mult * max(1.0, math.log10(max(1, n))) * probe_interval


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """Independent confirmations that drive a suspicion to its minimum timeout: memberlist's
    ``suspicion_mult - 2``, but no more than the ``n - 2`` members other than this node and the
    suspect."""
    return max(0, min(suspicion_mult - 2, n - 2))


def remaining_suspicion_time(
    confirmations: int, expected: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Lifeguard's dynamic suspicion timeout (memberlist's formula), minus ``elapsed``: from
    ``max_timeout`` with no confirmation down to ``min_timeout`` with ``expected`` of them,
    logarithmically. May be negative (the timeout has passed)."""
    if expected < 1:
        timeout = min_timeout
    else:
        frac = math.log(confirmations + 1) / math.log(expected + 1)
        timeout = max(min_timeout, max_timeout - frac * (max_timeout - min_timeout))
    return timeout - elapsed


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """How many times a gossip item is sent: ``mult * ceil(log10(n + 1))``."""
    return retransmit_mult * math.ceil(math.log10(n + 1))


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist's push-pull interval: unchanged up to 32 members, then one more interval per
    doubling, so full-state traffic grows slowly with the cluster."""
    if n <= 32:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)


def join_backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before join attempt ``attempt + 1``: ``base * 2**attempt`` capped at ``cap``,
    jittered down by up to half so that nodes started together do not retry in step."""
    delay = min(cap, math.ldexp(base, min(attempt, 32)))
    return delay * rng.uniform(0.5, 1.0)


def _frozen(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    return meta if isinstance(meta, MappingProxyType) else MappingProxyType(dict(meta))


def _note(notes: dict[NodeId, float], node: NodeId, until: float) -> None:
    """Remember ``node`` until ``until``, keeping at most :data:`MAX_NOTES` notes."""
    notes.pop(node, None)
    notes[node] = until
    if len(notes) > MAX_NOTES:
        del notes[next(iter(notes))]


# -- the broadcast queue -----------------------------------------------------------------------


class BroadcastQueue:
    """Gossip items waiting to be piggybacked, at most one per key (member name): a newer item
    about a member replaces the older one. :meth:`take` returns the least-sent items first
    (newest first among equals) and drops an item once sent ``limit`` times."""

    __slots__ = ("_capacity", "_items", "_serial")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: dict[str, list[Any]] = {}  # key -> [transmits, serial, item]
        self._serial = 0

    def __len__(self) -> int:
        return len(self._items)

    def push(self, key: str, item: Gossip) -> None:
        self._serial += 1
        self._items.pop(key, None)
        self._items[key] = [0, self._serial, item]
        if len(self._items) > self._capacity:
            worst = max(self._items, key=lambda k: (self._items[k][0], -self._items[k][1]))
            del self._items[worst]

    def take(self, count: int, limit: int) -> tuple[Gossip, ...]:
        """Up to ``count`` items to send now; each counts as one more transmission."""
        if not self._items or count <= 0:
            return ()
        chosen = heapq.nsmallest(count, self._items.items(), key=lambda kv: (kv[1][0], -kv[1][1]))
        out: list[Gossip] = []
        for key, record in chosen:
            record[0] += 1
            out.append(record[2])
            if record[0] >= limit:
                del self._items[key]
        return tuple(out)

    def items(self) -> list[Gossip]:
        """The queued items (for inspection)."""
        return [record[2] for record in self._items.values()]


# -- internal records --------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    node: NodeId
    address: Address
    incarnation: int
    state: State
    meta: Mapping[str, Any]
    since: float

    def view(self) -> Member:
        return Member(self.node, self.address, self.incarnation, self.state, self.meta, self.since)

    def member_state(self) -> MemberState:
        return MemberState(self.node, self.address, self.incarnation, self.state, self.meta)


@dataclass(slots=True)
class _Suspicion:
    """A suspicion timer: the deadline moves closer as distinct members confirm."""

    start: float
    expected: int
    min_timeout: float
    max_timeout: float
    confirmers: set[str]
    confirmations: int = 0
    deadline: float = 0.0
    told_at: float = -math.inf  # when the suspect was last told of it directly

    def __post_init__(self) -> None:
        self.restart(self.start)

    def restart(self, now: float) -> None:
        self.start = now
        self.deadline = now + remaining_suspicion_time(
            self.confirmations, self.expected, 0.0, self.min_timeout, self.max_timeout
        )

    def confirm(self, by: str) -> bool:
        """Count a confirmation by ``by``; ``False`` if it is not new or not needed."""
        if self.confirmations >= self.expected or by in self.confirmers:
            return False
        self.confirmers.add(by)
        self.confirmations += 1
        self.deadline = self.start + remaining_suspicion_time(
            self.confirmations, self.expected, 0.0, self.min_timeout, self.max_timeout
        )
        return True


@dataclass(slots=True)
class _Probe:
    target: NodeId
    incarnation: int
    seq: int
    timeout_at: float
    end_at: float
    acked: bool = False
    indirect: bool = False
    intermediaries: frozenset[str] = frozenset()
    nacks: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Relay:
    requester: NodeId
    requester_address: Address
    seq: int
    target: NodeId
    nack_at: float
    expires: float
    nacked: bool = False


@dataclass(slots=True)
class _Challenge:
    claim: Alive
    existing: NodeId | None  # None: the claim is on this node's own name
    deadline: float
    other_seq: int
    existing_seq: int | None
    other_acked: bool = False
    existing_acked: bool = False


# -- the state machine -------------------------------------------------------------------------


class Membership:
    """The membership view of one node. See the module docstring for the rules."""

    def __init__(
        self,
        me: NodeId,
        address: Address,
        *,
        meta: Mapping[str, Any] | None = None,
        config: Config = LAN,
        rng: random.Random,
        now: float,
    ) -> None:
        self.config = config
        self._me = me
        self._address = address
        self._rng = rng
        own_meta = self._checked_meta(meta or {})
        self._self = _Entry(me, address, 0, State.ALIVE, own_meta, now)
        self._members: dict[str, _Entry] = {me.name: self._self}
        self._live_count: int | None = None
        self._health = 0
        self._seq = rng.randrange(MAX_SEQ)
        self._queue = BroadcastQueue(config.max_members)
        self._suspicions: dict[str, _Suspicion] = {}
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._relays: dict[int, _Relay] = {}
        self._challenges: dict[str, _Challenge] = {}
        self._challenge_seqs: dict[int, str] = {}
        self._retired: dict[NodeId, float] = {}  # superseded boots, ignored until the time
        self._rivals: dict[NodeId, float] = {}  # boots in a name conflict, ignored until
        self._left = False
        self._accused = False  # set while merging a message that accuses this node
        self._seeds: tuple[Address, ...] = ()
        self._join_attempt = 0
        self._join_at = math.inf
        self._last_call = now
        self.pauses = 0
        c = config
        self._next_probe_at = now + rng.uniform(0, c.probe_interval)
        self._next_gossip_at = now + rng.uniform(0, c.gossip_interval)
        self._next_push_pull_at = now + rng.uniform(0, c.push_pull_interval)
        self._next_reconnect_at = now + rng.uniform(0, c.reconnect_interval)
        self._queue.push(me.name, self._own_alive())

    # -- queries -------------------------------------------------------------------------------

    @property
    def me(self) -> NodeId:
        return self._me

    @property
    def address(self) -> Address:
        return self._address

    @property
    def incarnation(self) -> int:
        return self._self.incarnation

    @property
    def health(self) -> int:
        """Lifeguard's local health score: 0 is healthy; timeouts scale by ``health + 1``."""
        return self._health

    @property
    def left(self) -> bool:
        return self._left

    @property
    def probe_interval(self) -> float:
        """The current, health-scaled probe interval."""
        return self.config.probe_interval * (self._health + 1)

    @property
    def pending_broadcasts(self) -> int:
        return len(self._queue)

    def members(self) -> list[Member]:
        """Every known member, this node included, sorted by name."""
        return [self._members[name].view() for name in sorted(self._members)]

    def alive(self) -> list[Member]:
        """ALIVE and SUSPECT members, this node included (unless it left), sorted by name."""
        return [m for m in self.members() if m.state in _LIVE]

    def get(self, name: str) -> Member | None:
        entry = self._members.get(name)
        return entry.view() if entry is not None else None

    def next_deadline(self) -> float:
        """The earliest time :meth:`tick` has work (at most ``gossip_interval`` ahead)."""
        deadline = min(self._next_gossip_at, self._join_at)
        if not self._left:
            deadline = min(
                deadline, self._next_probe_at, self._next_push_pull_at, self._next_reconnect_at
            )
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.end_at)
            if not probe.acked and not probe.indirect:
                deadline = min(deadline, probe.timeout_at)
        for suspicion in self._suspicions.values():
            deadline = min(deadline, suspicion.deadline)
        for relay in self._relays.values():
            deadline = min(deadline, relay.expires if relay.nacked else relay.nack_at)
        for challenge in self._challenges.values():
            deadline = min(deadline, challenge.deadline)
        return deadline

    # -- commands ------------------------------------------------------------------------------

    def join(self, seeds: Sequence[Address], now: float) -> list[Output]:
        """Push-pull (``join=True``) to every seed; :meth:`tick` retries with backoff until a
        push-pull answer arrives or another live member is known."""
        self._check_pause(now)
        self._seeds = tuple(dict.fromkeys(s for s in seeds if s != self._address))
        self._join_attempt = 0
        out: list[Output] = []
        if self._seeds and not self._left:
            self._join_round(now, out)
        return out

    def leave(self, now: float) -> list[Output]:
        """Leave gracefully: this node becomes LEFT everywhere. The returned sends (a
        :class:`~.messages.Broadcast` of the leave to up to ``leave_fanout`` members) should be
        sent before stopping; ticking a little longer also drains the gossip queue."""
        self._check_pause(now)
        if self._left:
            return []
        self._left = True
        me = self._self
        notice = Dead(self._me, me.incarnation, self._me.name, left=True)
        me.state = State.LEFT
        me.since = now
        self._changed()
        self._queue.push(self._me.name, notice)
        self._probe = None
        self._join_at = math.inf
        live = [e for e in self._others() if e.state in _LIVE]
        chosen = self._rng.sample(live, min(self.config.leave_fanout, len(live)))
        return [Send(e.address, e.node, Broadcast((notice,))) for e in chosen]

    def update_meta(self, meta: Mapping[str, Any], now: float) -> list[Output]:
        """Replace this node's meta (``ValueError`` past ``max_meta_bytes`` or if it is not plain
        msgpack data); bumps the incarnation and gossips the change."""
        self._check_pause(now)
        checked = self._checked_meta(meta)
        if checked == self._self.meta or self._left:
            return []
        self._self.meta = checked
        self._self.incarnation += 1
        self._queue.push(self._me.name, self._own_alive())
        return []

    # -- input ---------------------------------------------------------------------------------

    def receive(
        self, sender: NodeId, sender_address: Address, message: Message, now: float
    ) -> list[Output]:
        """Handle one message from ``sender`` (listening at ``sender_address``)."""
        self._check_pause(now)
        out: list[Output] = []
        if sender == self._me:
            return out
        self._accused = False
        if isinstance(message, PushPull):
            self._merge_state(message.members, sender, sender_address, now, out)
            if not message.reply:
                state = tuple(e.member_state() for e in self._members.values())
                out.append(Send(sender_address, sender, PushPull(False, True, state)))
                return out
            self._join_at = math.inf
        else:
            self._merge_gossip(message.gossip, sender, sender_address, now, out)
        answered = isinstance(message, Ping) and message.target == self._me
        if self._accused and not answered and not self._left:
            # the sender holds an accusation about this node: correct it directly
            out.append(Send(sender_address, sender, Broadcast((self._own_alive(),))))
        self._tell_suspect(sender, sender_address, now, out)
        if isinstance(message, Ping):
            if answered:  # the ack carries the refutation first, if there is one
                ack = Ack(message.seq, self._take())
                out.append(Send(sender_address, sender, ack))
            else:
                logger.debug("not answering a ping from %s for %s", sender, message.target)
        elif isinstance(message, Ack):
            self._on_ack(sender, message.seq, out)
        elif isinstance(message, Nack):
            probe = self._probe
            if probe is not None and probe.seq == message.seq:
                probe.nacks.update({sender.name} & probe.intermediaries)
        elif isinstance(message, PingReq):
            self._on_ping_req(sender, sender_address, message, now, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Run every timer that is due at ``now``."""
        self._check_pause(now)
        out: list[Output] = []
        probe = self._probe
        if probe is not None:
            if not probe.acked and not probe.indirect and now >= probe.timeout_at:
                self._indirect_probe(probe, out)
            if now >= probe.end_at:
                self._finish_probe(probe, now, out)
        if not self._left and self._probe is None and now >= self._next_probe_at:
            self._start_probe(now, out)
        for name, suspicion in list(self._suspicions.items()):
            if now >= suspicion.deadline:
                del self._suspicions[name]
                entry = self._members[name]
                logger.debug(
                    "%s: suspicion of %s timed out (%d confirmations)",
                    self._me.name,
                    name,
                    suspicion.confirmations,
                )
                dead = Dead(entry.node, entry.incarnation, self._me.name)
                self._on_dead(dead, now, out)
        if self._relays:
            self._tick_relays(now, out)
        for name, challenge in list(self._challenges.items()):
            if now >= challenge.deadline:
                self._resolve_challenge(name, challenge, now, out)
        if now >= self._next_gossip_at:
            self._next_gossip_at = now + self.config.gossip_interval
            self._gossip(now, out)
        if not self._left:
            if now >= self._next_push_pull_at:
                interval = push_pull_scale(self.config.push_pull_interval, self._live())
                self._next_push_pull_at = now + interval
                self._push_pull(lambda e: e.state == State.ALIVE, out)
            if now >= self._next_reconnect_at:
                self._next_reconnect_at = now + self.config.reconnect_interval
                self._push_pull(lambda e: e.state == State.DEAD, out)
        if now >= self._join_at:
            if self._live() > 1 or self._left:
                self._join_at = math.inf
            else:
                self._join_round(now, out)
        return out

    # -- helpers: bookkeeping ------------------------------------------------------------------

    def _checked_meta(self, meta: Mapping[str, Any]) -> Mapping[str, Any]:
        try:
            return MappingProxyType(normalize_meta(meta, self.config.max_meta_bytes))
        except CodecError as exc:
            raise ValueError(f"invalid node meta: {exc}") from None

    def _meta_fits(self, meta: Mapping[str, Any]) -> bool:
        try:
            return meta_size(meta) <= self.config.max_meta_bytes
        except CodecError:
            return False

    def _own_alive(self) -> Alive:
        me = self._self
        return Alive(self._me, me.incarnation, self._address, me.meta)

    def _others(self) -> Iterable[_Entry]:
        me = self._self
        return (e for e in self._members.values() if e is not me)

    def _changed(self) -> None:
        self._live_count = None

    def _live(self) -> int:
        """Live (ALIVE or SUSPECT) members, this node included."""
        if self._live_count is None:
            self._live_count = sum(1 for e in self._members.values() if e.state in _LIVE)
        return self._live_count

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & MAX_SEQ
        return self._seq

    def _take(self, room: int | None = None) -> tuple[Gossip, ...]:
        count = self.config.max_gossip_per_message if room is None else room
        return self._queue.take(count, retransmit_limit(self.config.retransmit_mult, self._live()))

    def _scaled(self, seconds: float) -> float:
        return seconds * (self._health + 1)

    def _health_delta(self, delta: int) -> None:
        top = self.config.awareness_max_multiplier - 1
        self._health = min(top, max(0, self._health + delta))

    def _event(
        self, kind: EventKind, entry: _Entry, previous: State | None, out: list[Output]
    ) -> None:
        logger.debug("%s: %s %s (%s)", self._me.name, kind, entry.node, entry.state.name)
        out.append(MemberEvent(kind, entry.view(), previous))

    def _check_pause(self, now: float) -> None:
        gap = now - self._last_call
        if gap > self.config.pause_threshold:
            self._after_pause(now, gap)
        if now > self._last_call:
            self._last_call = now

    def _after_pause(self, now: float, gap: float) -> None:
        """This node was stalled for ``gap`` seconds: evidence gathered across the stall is not
        trusted, so nobody is convicted until fresh evidence arrives."""
        logger.debug("%s: stalled for %.3fs; restarting failure detection", self._me.name, gap)
        self.pauses += 1
        self._probe = None
        self._relays.clear()
        self._challenges.clear()
        self._challenge_seqs.clear()
        for suspicion in self._suspicions.values():
            suspicion.restart(now)
        self._next_probe_at = min(self._next_probe_at, now)
        self._next_gossip_at = min(self._next_gossip_at, now)

    # -- helpers: merging news -----------------------------------------------------------------

    def _merge_gossip(
        self,
        items: tuple[Gossip, ...],
        sender: NodeId,
        sender_address: Address,
        now: float,
        out: list[Output],
    ) -> None:
        for item in items:
            if isinstance(item, Alive):
                direct = item.node == sender and item.address == sender_address
                self._on_alive(item, now, out, direct=direct)
            elif isinstance(item, Suspect):
                self._on_suspect(item, now, out)
            else:
                self._on_dead(item, now, out)

    def _merge_state(
        self,
        members: tuple[MemberState, ...],
        sender: NodeId,
        sender_address: Address,
        now: float,
        out: list[Output],
    ) -> None:
        for s in members:
            if s.state == State.ALIVE:
                alive = Alive(s.node, s.incarnation, s.address, s.meta)
                direct = s.node == sender and s.address == sender_address
                self._on_alive(alive, now, out, direct=direct)
            elif s.state == State.LEFT:
                self._on_dead(Dead(s.node, s.incarnation, s.node.name, left=True), now, out)
            else:  # a remote DEAD is only a suspicion here: the accused may still refute
                self._on_suspect(Suspect(s.node, s.incarnation, sender.name), now, out)

    def _on_alive(self, a: Alive, now: float, out: list[Output], *, direct: bool) -> None:
        name = a.node.name
        if name == self._me.name:
            if a.node == self._me:
                if not self._left and a.incarnation > self._self.incarnation:
                    self._refute(a.incarnation)
            else:
                self._claim_on_my_name(a, now, out)
            return
        if a.node in self._retired or a.node in self._rivals:
            return
        entry = self._members.get(name)
        if entry is None:
            if self._meta_fits(a.meta):
                self._add(a, now, out)
            return
        if entry.node != a.node:
            if name in self._challenges or not self._meta_fits(a.meta):
                return
            if entry.state in _GONE:
                self._replace(entry, a, now, out)
            elif direct and a.address == entry.address:
                logger.debug("%s: %s restarted as %s", self._me.name, entry.node, a.node)
                self._replace(entry, a, now, out)
            else:
                self._challenge(a, entry, now, out)
            return
        if a.incarnation <= entry.incarnation or not self._meta_fits(a.meta):
            return
        self._suspicions.pop(name, None)
        previous = entry.state
        changed = entry.meta != a.meta or entry.address != a.address
        entry.incarnation = a.incarnation
        entry.address = a.address
        entry.meta = _frozen(a.meta)
        self._queue.push(name, a)
        if previous != State.ALIVE:
            entry.state = State.ALIVE
            entry.since = now
            self._changed()
            self._event("alive", entry, previous, out)
        elif changed:
            self._event("updated", entry, previous, out)

    def _accused_entry(self, node: NodeId, incarnation: int) -> _Entry | None:
        """The member an accusation (suspect or dead) is about, if it still applies: the boot
        we hold, at an incarnation not older than ours. A stale accusation of this node makes
        it announce its current Alive again."""
        entry = self._members.get(node.name)
        if entry is None or entry.node != node:
            return None
        if entry is self._self:
            self._accused = True
        if incarnation < entry.incarnation:
            if entry is self._self:
                self._reannounce()
            return None
        return entry

    def _on_suspect(self, s: Suspect, now: float, out: list[Output]) -> None:
        name = s.node.name
        entry = self._accused_entry(s.node, s.incarnation)
        if entry is None:
            return
        suspicion = self._suspicions.get(name)
        if suspicion is not None:
            if suspicion.confirm(s.by):
                self._queue.push(name, s)
            return
        if entry.state != State.ALIVE:
            return
        if entry is self._self:
            if not self._left:
                logger.debug("%s: refuting a suspicion by %s", self._me.name, s.by)
                self._refute(s.incarnation)
            return
        self._queue.push(name, s)
        # buddy system, eagerly: the suspect hears of it now, refutes and answers this node
        out.append(Send(entry.address, entry.node, Broadcast((s,))))
        entry.incarnation = s.incarnation
        entry.state = State.SUSPECT
        entry.since = now
        self._changed()
        c = self.config
        n = self._live()
        low = suspicion_timeout(c.suspicion_mult, n, c.probe_interval)
        self._suspicions[name] = _Suspicion(
            start=now,
            expected=expected_confirmations(c.suspicion_mult, n),
            min_timeout=low,
            max_timeout=c.suspicion_max_timeout_mult * low,
            confirmers={s.by},
        )
        self._event("suspected", entry, State.ALIVE, out)

    def _on_dead(self, d: Dead, now: float, out: list[Output]) -> None:
        name = d.node.name
        entry = self._accused_entry(d.node, d.incarnation)
        if entry is None:
            return
        self._suspicions.pop(name, None)
        if entry.state in _GONE:
            return
        if entry is self._self:
            if not self._left:
                logger.debug("%s: refuting a death notice by %s", self._me.name, d.by)
                self._refute(d.incarnation)
            return
        self._queue.push(name, d)
        previous = entry.state
        entry.incarnation = d.incarnation
        entry.state = State.LEFT if d.left else State.DEAD
        entry.since = now
        self._changed()
        for rival in [r for r in self._rivals if r.name == name]:
            del self._rivals[rival]
        self._event("left" if d.left else "failed", entry, previous, out)

    def _tell_suspect(
        self, sender: NodeId, address: Address, now: float, out: list[Output]
    ) -> None:
        """A member this node suspects reached it: it is reachable again (a partition healed)
        and may not know of the suspicion (its gossip can run out of retransmissions while the
        partition lasts, and this node probes it only once a round): tell it directly, at most
        once a probe interval, so that it refutes before the suspicion times out."""
        entry = self._members.get(sender.name)
        suspicion = self._suspicions.get(sender.name)
        if entry is None or suspicion is None or entry.node != sender:
            return
        if entry.state != State.SUSPECT or now - suspicion.told_at < self.config.probe_interval:
            return
        suspicion.told_at = now
        out.append(
            Send(address, sender, Broadcast((Suspect(sender, entry.incarnation, self._me.name),)))
        )

    def _reannounce(self) -> None:
        """Someone still holds an accusation this node already refuted (its refutation may
        have missed them): gossip the current incarnation again, first in line, so that the
        ack to a buddy-system ping carries it."""
        if not self._left:
            self._queue.push(self._me.name, self._own_alive())

    def _refute(self, accused: int) -> None:
        me = self._self
        me.incarnation = max(me.incarnation, accused) + 1
        self._health_delta(1)
        self._queue.push(self._me.name, self._own_alive())

    def _add(self, a: Alive, now: float, out: list[Output]) -> None:
        if len(self._members) >= self.config.max_members and not self._evict_one():
            logger.debug("%s: member table full; not adding %s", self._me.name, a.node)
            return
        entry = _Entry(a.node, a.address, a.incarnation, State.ALIVE, _frozen(a.meta), now)
        self._members[a.node.name] = entry
        self._changed()
        position = self._rng.randint(0, len(self._probe_order))
        self._probe_order.insert(position, a.node.name)
        if position < self._probe_index:
            self._probe_index += 1
        self._queue.push(a.node.name, a)
        self._event("joined", entry, None, out)

    def _evict_one(self) -> bool:
        gone = [e for e in self._others() if e.state in _GONE]
        if not gone:
            return False
        oldest = min(gone, key=lambda e: e.since)
        del self._members[oldest.node.name]
        self._changed()
        return True

    def _replace(self, entry: _Entry, a: Alive, now: float, out: list[Output]) -> None:
        """Another boot of ``entry``'s name takes its place; the old boot is dead."""
        name = entry.node.name
        self._suspicions.pop(name, None)
        _note(self._retired, entry.node, now + self.config.dead_reclaim)
        if entry.state in _LIVE:
            previous = entry.state
            entry.state = State.DEAD
            entry.since = now
            self._event("failed", entry, previous, out)
        fresh = _Entry(a.node, a.address, a.incarnation, State.ALIVE, _frozen(a.meta), now)
        self._members[name] = fresh
        self._changed()
        self._queue.push(name, a)
        self._event("joined", fresh, None, out)

    # -- helpers: identity challenges ----------------------------------------------------------

    def _claim_on_my_name(self, a: Alive, now: float, out: list[Output]) -> None:
        if a.node in self._retired or a.node in self._rivals:
            return
        if a.address == self._address:  # an earlier boot of this node, at this address
            _note(self._retired, a.node, now + self.config.dead_reclaim)
            return
        if self._me.name not in self._challenges:
            self._challenge(a, None, now, out)

    def _challenge(self, a: Alive, entry: _Entry | None, now: float, out: list[Output]) -> None:
        """Ping the claimed boot and the held one; decide when the probe interval ends."""
        if len(self._challenges) >= MAX_CHALLENGES:
            return
        name = a.node.name
        other_seq = self._next_seq()
        self._challenge_seqs[other_seq] = name
        out.append(Send(a.address, a.node, Ping(other_seq, a.node)))
        existing_seq = None
        if entry is not None:
            existing_seq = self._next_seq()
            self._challenge_seqs[existing_seq] = name
            out.append(Send(entry.address, entry.node, Ping(existing_seq, entry.node)))
        self._challenges[name] = _Challenge(
            claim=a,
            existing=entry.node if entry is not None else None,
            deadline=now + self._scaled(self.config.probe_interval),
            other_seq=other_seq,
            existing_seq=existing_seq,
        )
        logger.debug("%s: challenging a claim of %s by %s", self._me.name, name, a.node)

    def _resolve_challenge(self, name: str, c: _Challenge, now: float, out: list[Output]) -> None:
        del self._challenges[name]
        self._challenge_seqs.pop(c.other_seq, None)
        if c.existing_seq is not None:
            self._challenge_seqs.pop(c.existing_seq, None)
        claim = c.claim
        meta = _frozen(claim.meta)
        rival = Member(claim.node, claim.address, claim.incarnation, State.ALIVE, meta, now)
        if c.existing is None:  # a claim on this node's own name
            if c.other_acked:
                _note(self._rivals, claim.node, now + self.config.push_pull_interval)
                out.append(NameConflict(name, self._self.view(), rival))
            else:
                _note(self._retired, claim.node, now + self.config.dead_reclaim)
            return
        entry = self._members.get(name)
        if entry is None or entry.node != c.existing:
            return  # the table moved on meanwhile; a later claim starts afresh
        if c.other_acked and c.existing_acked:
            _note(self._rivals, claim.node, now + self.config.push_pull_interval)
            out.append(NameConflict(name, entry.view(), rival))
        elif c.other_acked:
            self._replace(entry, claim, now, out)
        elif c.existing_acked:
            _note(self._retired, claim.node, now + self.config.dead_reclaim)

    # -- helpers: probing ----------------------------------------------------------------------

    def _start_probe(self, now: float, out: list[Output]) -> None:
        interval = self._scaled(self.config.probe_interval)
        self._next_probe_at = now + interval
        target = self._next_probe_target(now)
        if target is None:
            return
        seq = self._next_seq()
        if target.state == State.SUSPECT:  # buddy system: let it refute at once
            buddy = Suspect(target.node, target.incarnation, self._me.name)
            gossip = (buddy, *self._take(self.config.max_gossip_per_message - 1))
        else:
            gossip = self._take()
        self._probe = _Probe(
            target=target.node,
            incarnation=target.incarnation,
            seq=seq,
            timeout_at=now + self._scaled(self.config.probe_timeout),
            end_at=now + interval,
        )
        out.append(Send(target.address, target.node, Ping(seq, target.node, gossip)))

    def _next_probe_target(self, now: float) -> _Entry | None:
        reshuffled = False
        while True:
            if self._probe_index >= len(self._probe_order):
                if reshuffled:
                    return None
                self._reshuffle(now)
                reshuffled = True
                continue
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            entry = self._members.get(name)
            if entry is not None and entry is not self._self and entry.state in _LIVE:
                return entry

    def _reshuffle(self, now: float) -> None:
        """End of a probe round: forget long-gone members and expired identity notes, and
        shuffle the order of the next round."""
        reclaim = self.config.dead_reclaim
        for name, entry in list(self._members.items()):
            if entry.state in _GONE and entry is not self._self and now - entry.since >= reclaim:
                del self._members[name]
                self._changed()
        self._retired = {n: t for n, t in self._retired.items() if t > now}
        self._rivals = {n: t for n, t in self._rivals.items() if t > now}
        order = [name for name in self._members if name != self._me.name]
        self._rng.shuffle(order)
        self._probe_order = order
        self._probe_index = 0

    def _indirect_probe(self, probe: _Probe, out: list[Output]) -> None:
        probe.indirect = True
        candidates = [
            e for e in self._others() if e.state == State.ALIVE and e.node.name != probe.target.name
        ]
        k = min(self.config.indirect_checks, len(candidates))
        chosen = self._rng.sample(candidates, k)
        probe.intermediaries = frozenset(e.node.name for e in chosen)
        for e in chosen:
            out.append(Send(e.address, e.node, PingReq(probe.seq, probe.target, self._take())))

    def _finish_probe(self, probe: _Probe, now: float, out: list[Output]) -> None:
        self._probe = None
        if probe.acked:
            return
        expected = len(probe.intermediaries)
        self._health_delta(expected - len(probe.nacks) if expected else 1)
        entry = self._members.get(probe.target.name)
        if entry is None or entry.node != probe.target or entry.state not in _LIVE:
            return
        logger.debug("%s: no ack from %s", self._me.name, probe.target)
        self._on_suspect(Suspect(probe.target, probe.incarnation, self._me.name), now, out)

    def _on_ack(self, sender: NodeId, seq: int, out: list[Output]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            if not probe.acked and (sender == probe.target or sender.name in probe.intermediaries):
                probe.acked = True
                self._health_delta(-1)
            return
        relay = self._relays.get(seq)
        if relay is not None:
            if sender == relay.target:
                del self._relays[seq]
                ack = Ack(relay.seq, self._take())
                out.append(Send(relay.requester_address, relay.requester, ack))
            return
        name = self._challenge_seqs.get(seq)
        if name is not None:
            challenge = self._challenges[name]
            if seq == challenge.other_seq and sender == challenge.claim.node:
                challenge.other_acked = True
            elif seq == challenge.existing_seq and sender == challenge.existing:
                challenge.existing_acked = True

    def _on_ping_req(
        self, sender: NodeId, sender_address: Address, req: PingReq, now: float, out: list[Output]
    ) -> None:
        target = req.target
        entry = self._members.get(target.name)
        if target == self._me:
            out.append(Send(sender_address, sender, Ack(req.seq, self._take())))
            return
        if entry is None or entry is self._self:
            out.append(Send(sender_address, sender, Nack(req.seq)))
            return
        if len(self._relays) >= MAX_RELAYS:
            del self._relays[next(iter(self._relays))]
        seq = self._next_seq()
        c = self.config
        self._relays[seq] = _Relay(
            requester=sender,
            requester_address=sender_address,
            seq=req.seq,
            target=target,
            nack_at=now + c.nack_fraction * c.probe_timeout,
            expires=now + c.probe_interval,
        )
        out.append(Send(entry.address, target, Ping(seq, target, self._take())))

    def _tick_relays(self, now: float, out: list[Output]) -> None:
        for seq, relay in list(self._relays.items()):
            if not relay.nacked and now >= relay.nack_at:
                relay.nacked = True
                nack = Nack(relay.seq)
                out.append(Send(relay.requester_address, relay.requester, nack))
            if now >= relay.expires:
                del self._relays[seq]

    # -- helpers: dissemination ----------------------------------------------------------------

    def _gossip(self, now: float, out: list[Output]) -> None:
        if not self._queue:
            return
        horizon = now - self.config.gossip_to_the_dead
        candidates = [
            e
            for e in self._others()
            if e.state in _LIVE or (e.state == State.DEAD and e.since >= horizon)
        ]
        k = min(self.config.gossip_nodes, len(candidates))
        for e in self._rng.sample(candidates, k):
            items = self._take()
            if not items:
                return
            out.append(Send(e.address, e.node, Broadcast(items)))

    def _push_pull(self, eligible: Callable[[_Entry], bool], out: list[Output]) -> None:
        candidates = [e for e in self._others() if eligible(e)]
        if not candidates:
            return
        e = self._rng.choice(candidates)
        state = tuple(m.member_state() for m in self._members.values())
        out.append(Send(e.address, e.node, PushPull(False, False, state)))

    def _join_round(self, now: float, out: list[Output]) -> None:
        state = tuple(e.member_state() for e in self._members.values())
        for seed in self._seeds:
            out.append(Send(seed, None, PushPull(True, False, state)))
        c = self.config
        delay = join_backoff(self._join_attempt, c.join_retry_base, c.join_retry_cap, self._rng)
        self._join_attempt += 1
        self._join_at = now + delay
