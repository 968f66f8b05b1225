"""``reset_memory()``: empty named ``memory://`` hubs between tests.

Brokers that name the same ``memory://NAME`` share one in-process hub, which outlives them: a
test that reuses a name (a module-level ``Broker("memory://shop")`` in the application under
test, say) sees the messages an earlier test left behind. :func:`reset_memory` empties the hub
in place — ready and unclaimed messages, dead-letter holding stores — so every broker object
that already exists, connected or not, and every broker made later, shares the emptied hub.
Consumer groups stay declared and running subscribers keep running.

Not reset: delayed messages not yet due (they arrive when due; use a fresh name, or let a
``VirtualClock`` run them out first) and the hub's clock (every broker of one name must use
the same clock; use another name for another clock).

    @pytest.fixture(autouse=True)
    def fresh_hubs():
        yield
        unimq.testing.reset_memory()
"""

from __future__ import annotations

from ..memory import hub as _hub


def reset_memory(name: str | None = None) -> None:
    """Empty the named hub ``name`` (of ``memory://NAME``), or every named hub, in place."""
    hubs = [_hub._named_hubs.get(name)] if name is not None else list(_hub._named_hubs.values())
    for found in hubs:
        if found is None:
            continue
        for topic in found.topics.values():
            topic.unclaimed.clear()
            if topic.held is not None:
                topic.held.clear()
            for queue in topic.groups.values():
                found.ready -= len(queue.items)
                queue.items.clear()
