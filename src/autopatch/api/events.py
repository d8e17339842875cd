"""A run's transitions as Server-Sent Events: every stored one first, then each new one as it is written.

The stream polls its own store connection (held for the request's life) twice a second: the
engine writes every transition before it acts, so the store is the one source of truth and the
stream needs no channel from the worker (a run driven by the CLI streams the same way). A
comment line keeps proxies from closing a quiet stream; ``event: end`` with the run's final
status closes it once the run is terminal.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

import anyio

from autopatch.domain.runs import Transition
from autopatch.store.base import RunStore, Store

POLL_SECONDS = 0.5
KEEP_ALIVE_SECONDS = 15.0


def format_event(data: str, event: str | None = None, event_id: str | None = None) -> str:
    lines = [f"event: {event}"] if event else []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return "\n".join(lines) + "\n\n"


def transition_event(transition: Transition, event_id: str) -> str:
    data = {
        "instance": transition.instance_id,
        "kb": transition.kb,
        "from": transition.from_state,
        "to": transition.to_state,
        "at": transition.at,
        "note": transition.note,
    }
    return format_event(json.dumps(data), event_id=event_id)


def _new_transitions(store: RunStore, run_id: str, seen: dict[tuple[str, str], int]) -> tuple[list[str], bool]:
    """Events for the transitions not sent yet (the store keeps them in order per KB), and whether the run ended."""
    terminal = store.get_run(run_id).status.is_terminal  # read first: every transition before it is then stored
    fresh: list[tuple[str, Transition, str]] = []
    counts: dict[tuple[str, str], int] = {}
    for transition in store.transitions(run_id):
        key = (transition.instance_id, transition.kb)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > seen.get(key, 0):
            fresh.append((transition.at, transition, f"{key[0]}/{key[1]}/{counts[key]}"))
    seen.update(counts)
    fresh.sort(key=lambda item: item[0])  # oldest first across servers and KBs
    return [transition_event(t, event_id) for _, t, event_id in fresh], terminal


async def run_events(
    open_store: Callable[[], Store], run_id: str, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[str]:
    """The event stream of ``run_id`` (known to exist); store reads run on a worker thread."""
    store = await anyio.to_thread.run_sync(open_store)
    seen: dict[tuple[str, str], int] = {}
    quiet_since = clock()
    try:
        while True:
            events, terminal = await anyio.to_thread.run_sync(_new_transitions, store, run_id, seen)
            for event in events:
                yield event
            if events:
                quiet_since = clock()
            if terminal:
                status = await anyio.to_thread.run_sync(lambda: store.get_run(run_id).status)
                yield format_event(str(status), event="end")
                return
            if clock() - quiet_since >= KEEP_ALIVE_SECONDS:
                yield ": keep-alive\n\n"
                quiet_since = clock()
            await anyio.sleep(POLL_SECONDS)
    finally:
        store.close()
