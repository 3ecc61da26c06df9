"""The one time seam: every timestamp the engine takes comes from :func:`utcnow`."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Timezone-aware UTC now (tests freeze it with freezegun)."""
    return datetime.now(UTC)
