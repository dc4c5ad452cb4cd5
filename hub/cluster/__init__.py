"""Cluster membership (SWIM + Lifeguard), its messages and their wire codec; the node that runs
them (:class:`Node`) and its test facility for fault injection (:class:`Faults`)."""

from __future__ import annotations

from .codec import MAX_MESSAGE_BYTES, CodecError, decode, decode_envelope, encode, encode_envelope
from .faults import Faults
from .membership import (
    LAN,
    LOCAL,
    PRESETS,
    Config,
    Member,
    MemberEvent,
    Membership,
    NameConflict,
    Output,
    Send,
)
from .messages import Address, NodeId, State
from .node import Node

__all__ = [
    "LAN",
    "LOCAL",
    "MAX_MESSAGE_BYTES",
    "PRESETS",
    "Address",
    "CodecError",
    "Config",
    "Faults",
    "Member",
    "MemberEvent",
    "Membership",
    "NameConflict",
    "Node",
    "NodeId",
    "Output",
    "Send",
    "State",
    "decode",
    "decode_envelope",
    "encode",
    "encode_envelope",
]
