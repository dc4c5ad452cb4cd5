"""``python -m hub``: the ``processhub`` command line (see :mod:`hub.cli`)."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
