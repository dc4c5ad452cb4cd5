"""Cluster membership (SWIM + Lifeguard), its messages and their wire codec."""

from __future__ import annotations

from .codec import MAX_MESSAGE_BYTES, CodecError, decode, decode_envelope, encode, encode_envelope
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

__all__ = [
    "LAN",
    "LOCAL",
    "MAX_MESSAGE_BYTES",
    "PRESETS",
    "Address",
    "CodecError",
    "Config",
    "Member",
    "MemberEvent",
    "Membership",
    "NameConflict",
    "NodeId",
    "Output",
    "Send",
    "State",
    "decode",
    "decode_envelope",
    "encode",
    "encode_envelope",
]
