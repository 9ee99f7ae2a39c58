"""The in-memory indexes of the bindings the ``BindingWriter`` serves.

With a million bindings nothing that runs per scrape, per dead token or per
minute may walk them all, so besides the rows by id and by AOR this keeps:

* the rows by push token, VoIP or remote (a dead token's bindings are found at once);
* a heap of expiry times: ``expired(now)`` returns the bindings whose time is
  up, popping only those (the purge timer no longer checks every binding);
  an expired binding with a push token goes on a second heap, so that
  ``gone(now, token_lifetime)`` finds the kept tokens whose time is up too
  without walking every kept one;
* the rows that asked for refresh pushes (``+sip.pnsreg``), so the refresh
  scheduler's scan every few seconds reads those, not every binding;
* counts of live bindings and of live ones with a push token, kept as rows
  come, go and expire (``/metrics`` and ``/status`` read two integers).

A row replaced under the same id leaves its old heap entry behind; such stale
entries are skipped when they come up, and the heap is rebuilt when they
outnumber the rows.  Time only moves forward here: ``now`` comes from the
service's clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator

from b2bua.store.bindings import Binding

__all__ = ["BindingIndex"]


class BindingIndex:
    """Bindings by id, by AOR and by push token, with expiry order and counts."""

    def __init__(self) -> None:
        self.by_id: dict[int, Binding] = {}
        self.by_aor: dict[str, dict[int, Binding]] = {}
        self._by_token: dict[str, dict[int, Binding]] = {}
        self.refreshing: dict[int, Binding] = {}   # rows with push_refresh and a push token
        self._heap: list[tuple[float, int]] = []   # (expires_at, id), stale entries included
        self._expired: set[int] = set()            # ids whose expiry the heap has passed
        self._expired_plain: set[int] = set()      # ... of those, the ones without a push token
        self._kept_heap: list[tuple[float, int]] = []  # (expires_at, id) of expired ones with a token
        self._kept_gone: set[int] = set()          # ... popped from it: their token's time is up too
        self._live = 0
        self._live_with_token = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Binding]:
        return iter(self.by_id.values())

    def clear(self) -> None:
        """Forget everything (the dicts stay the same objects: readers keep them)."""
        self.by_id.clear()
        self.by_aor.clear()
        self._by_token.clear()
        self.refreshing.clear()
        self._heap.clear()
        self._expired.clear()
        self._expired_plain.clear()
        self._kept_heap.clear()
        self._kept_gone.clear()
        self._live = self._live_with_token = 0

    def load(self, bindings: Iterable[Binding]) -> None:
        self.clear()
        for binding in bindings:
            self.put(binding)

    # -- changes -------------------------------------------------------------------

    def put(self, binding: Binding) -> None:
        """Add ``binding`` or replace the row with its id."""
        key = binding.id
        assert key is not None  # rows from the store or the writer always have one
        old = self.by_id.get(key)
        if old is not None:
            self._unlink(old)
        self.by_id[key] = binding
        self.by_aor.setdefault(binding.aor, {})[key] = binding
        for token in _tokens(binding):
            self._by_token.setdefault(token, {})[key] = binding
        if binding.push_refresh and binding.push_token:
            self.refreshing[key] = binding
        if binding.push_token:
            self._live_with_token += 1
        self._live += 1
        heapq.heappush(self._heap, (binding.expires_at, key))
        if len(self._heap) > 2 * len(self.by_id) + 1024:
            self._rebuild_heap()

    def drop(self, binding: Binding) -> None:
        """Forget the row with ``binding``'s id (if it is still there)."""
        current = self.by_id.get(binding.id) if binding.id is not None else None
        if current is not None:
            self._unlink(current)

    # -- reads ---------------------------------------------------------------------

    def for_token(self, token: str) -> list[Binding]:
        """The bindings carrying push ``token``, expired ones included, by id."""
        rows = self._by_token.get(token)
        return [rows[key] for key in sorted(rows)] if rows else []

    def expired(self, now: float) -> list[Binding]:
        """Every binding whose time is up at ``now``."""
        self._advance(now)
        return [self.by_id[key] for key in sorted(self._expired)]

    def gone(self, now: float, token_lifetime: float = 0.0) -> list[Binding]:
        """The bindings to purge at ``now``: expired ones without a push token, and
        those whose push token has been kept ``token_lifetime`` past their expiry."""
        self._advance(now)
        heap, by_id = self._kept_heap, self.by_id
        while heap and heap[0][0] + token_lifetime <= now:
            expires_at, key = heapq.heappop(heap)
            binding = by_id.get(key)
            if binding is not None and binding.expires_at == expires_at and key in self._expired:
                self._kept_gone.add(key)
        return [by_id[key] for key in sorted(self._expired_plain | self._kept_gone)]

    def counts(self, now: float) -> tuple[int, int]:
        """(live bindings, live bindings with a push token) at ``now``."""
        self._advance(now)
        return self._live, self._live_with_token

    # -- internals -----------------------------------------------------------------

    def _unlink(self, binding: Binding) -> None:
        key = binding.id
        assert key is not None
        del self.by_id[key]
        rows = self.by_aor.get(binding.aor)
        if rows is not None:
            rows.pop(key, None)
            if not rows:
                del self.by_aor[binding.aor]
        self.refreshing.pop(key, None)
        for token in _tokens(binding):
            carriers = self._by_token.get(token)
            if carriers is not None:
                carriers.pop(key, None)
                if not carriers:
                    del self._by_token[token]
        if key in self._expired:
            self._expired.discard(key)
            self._expired_plain.discard(key)
            self._kept_gone.discard(key)
        else:
            self._live -= 1
            if binding.push_token:
                self._live_with_token -= 1

    def _advance(self, now: float) -> None:
        heap, by_id = self._heap, self.by_id
        while heap and heap[0][0] <= now:
            expires_at, key = heapq.heappop(heap)
            binding = by_id.get(key)
            if binding is None or binding.expires_at != expires_at or key in self._expired:
                continue   # a stale entry: the row went or was refreshed
            self._expired.add(key)
            if binding.push_token:   # kept (Binding.kept): the VoIP/FCM token decides
                heapq.heappush(self._kept_heap, (expires_at, key))
            else:
                self._expired_plain.add(key)
            self._live -= 1
            if binding.push_token:
                self._live_with_token -= 1

    def _rebuild_heap(self) -> None:
        self._heap = [(b.expires_at, key) for key, b in self.by_id.items()
                      if key not in self._expired]
        heapq.heapify(self._heap)


def _tokens(binding: Binding) -> tuple[str, ...]:
    """The push tokens a binding carries: its VoIP/FCM token and its APNs remote token."""
    return tuple(t for t in (binding.push_token, binding.push_remote_token) if t)
