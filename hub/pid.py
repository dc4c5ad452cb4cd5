"""Process identifiers."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["Pid"]


class Pid(NamedTuple):
    """Identity of one process instance: ``(node, boot_id, local_id)``.

    A restart gives a child a new pid; a node restart gives a new ``boot_id``, so a pid never
    names two instances. Hashable, ordered, and msgpack-able as a 3-element list.
    """

    node: str
    boot_id: str
    local_id: int

    def __str__(self) -> str:
        return f"<{self.node}.{self.boot_id[:8]}.{self.local_id}>"

    def to_wire(self) -> list[Any]:
        return [self.node, self.boot_id, self.local_id]

    @classmethod
    def from_wire(cls, data: Any) -> Pid:
        if (
            not isinstance(data, list | tuple)
            or len(data) != 3
            or not isinstance(data[0], str)
            or not isinstance(data[1], str)
            or type(data[2]) is not int
        ):
            raise ValueError(f"malformed pid: {data!r}")
        return cls(data[0], data[1], data[2])
