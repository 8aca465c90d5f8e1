"""The demo's sessions: one `fastclipseg.Session` per browser tab, kept in memory in a bounded LRU
under a random token, and one lock around the model.

The network is not made for concurrent calls, and a session's history must not change under a
reader, so every model call and every change of a session holds the lock (a demo answers one
person at a time). What a request draws afterwards comes from a `Snapshot`, whose result is fully
computed before the lock is let go, so pictures and downloads are made outside it.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..results import SegmentationResult
from ..session import Session


class UnknownSession(KeyError):
    """A token that names no live session (never issued, or evicted from the LRU)."""

    def __str__(self) -> str:
        return "this session has expired (the demo keeps the most recent ones only): open the image again"


@dataclass
class Tab:
    """One browser tab's session; `version` counts its changes, so that the page's picture URLs
    change whenever the result does."""

    token: str
    name: str
    session: Session
    version: int = 0


@dataclass(frozen=True)
class Snapshot:
    """A tab's state at one moment: what the page shows and downloads."""

    token: str
    name: str
    image: np.ndarray
    version: int
    history: tuple[str, ...]
    current: SegmentationResult | None


def _prepared(result: SegmentationResult | None) -> SegmentationResult | None:
    """Compute what pictures and downloads read (masks first: the summary comes in the same pass),
    so that nothing is computed lazily by two threads at once later."""
    if result is not None:
        _ = result.masks, result.probs, result.rle
    return result


class SessionStore:
    """At most `capacity` sessions, the least recently used evicted first; each keeps at most
    `history_limit` results (the oldest dropped), which bounds the memory a tab can hold."""

    def __init__(self, segmenter: object, *, capacity: int = 8, history_limit: int = 32,
                 threshold: float = 0.5) -> None:
        if capacity < 1 or history_limit < 1:
            raise ValueError(f"capacity and history_limit must be >= 1, got {capacity} and {history_limit}")
        self.segmenter = segmenter
        self.capacity = capacity
        self.history_limit = history_limit
        self.threshold = threshold
        self.lock = threading.Lock()
        self.tabs: OrderedDict[str, Tab] = OrderedDict()

    def open(self, image: np.ndarray, name: str) -> Snapshot:
        """A new session on `image` (the vision stage runs here) under a fresh token."""
        with self.lock:
            session = Session(self.segmenter, image, self.threshold)
            tab = Tab(token=secrets.token_urlsafe(18), name=name, session=session)
            self.tabs[tab.token] = tab
            while len(self.tabs) > self.capacity:
                self.tabs.popitem(last=False)
            return self._snapshot(tab)

    def snapshot(self, token: str) -> Snapshot:
        with self.lock:
            return self._snapshot(self._tab(token))

    def change(self, token: str, action: Callable[[Session], object]) -> Snapshot:
        """Run `action(session)` (segment, refine, undo, reset) under the lock; its errors propagate
        and leave the session as it was."""
        with self.lock:
            tab = self._tab(token)
            action(tab.session)
            del tab.session.history[:-self.history_limit]
            tab.version += 1
            return self._snapshot(tab)

    def _tab(self, token: str) -> Tab:
        tab = self.tabs.get(token)
        if tab is None:
            raise UnknownSession(token)
        self.tabs.move_to_end(token)
        return tab

    @staticmethod
    def _snapshot(tab: Tab) -> Snapshot:
        session = tab.session
        return Snapshot(token=tab.token, name=tab.name, image=session.image, version=tab.version,
                        history=tuple(" · ".join(result.prompts) for result in session.history),
                        current=_prepared(session.current))
