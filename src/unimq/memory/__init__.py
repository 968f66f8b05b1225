"""The in-memory backend: ``memory://NAME`` shared per process, ``memory://`` private."""

from .hub import forget
from .transport import MemoryTransport

__all__ = ["MemoryTransport", "forget"]
