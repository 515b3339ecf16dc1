"""Approximate time synchronisation of colour and depth by header stamps, camera_info lookup,
and the per-reason drop counter with once-per-kind logging (message_filters is not available
for these wheels). ROS-free: items are (stamp, payload) and the payload is opaque.

    sync = PairSync(tolerance_ns=20_000_000, max_pending=30)
    pairs, unmatched = sync.add("color", stamp, msg)     # [(stamp_c, color, stamp_d, depth)], [dropped colour]
    infos = StampedCache(max_items=60); infos.add(stamp, K_info); infos.nearest(stamp, tol)
    drops = DropCounter(log=node.get_logger().warning, throttle_s=30.0)
    drops.drop("bad_encoding", "colour image: encoding 'yuv422' not supported ...")

Matching rule: a colour item pairs with the depth item nearest in stamp when they differ by at
most the tolerance; the pair is final once a depth item at least as far after the colour
stamp has arrived (identical stamps pair at once). A colour item is given up (unmatched,
counted by the caller) once a depth that arrived after it is newer by more than the
tolerance and none paired, when more than `max_pending` colour items wait, or (`expire`) when it
waited too long in wall time; the last `max_pending` depth items are kept (they are not
frames). Pairs come out in colour arrival order.
"""
from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from typing import Any, Callable


class PairSync:
    def __init__(self, tolerance_ns: int, max_pending: int = 30, clock: Callable[[], float] = time.monotonic):
        if tolerance_ns < 0 or max_pending < 1:
            raise ValueError(f"tolerance_ns must be >= 0 and max_pending >= 1, got {tolerance_ns}, {max_pending}")
        self.tolerance_ns = int(tolerance_ns)
        self.max_pending = int(max_pending)
        self.clock = clock
        self._q: dict[str, deque] = {"color": deque(), "depth": deque()}
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, kind: str, stamp: int, payload: Any) -> tuple[list[tuple], list[tuple]]:
        """Add one item; returns (pairs, unmatched colour items) that this made final."""
        if kind not in self._q:
            raise ValueError(f"unknown stream {kind!r}; choose one of {list(self._q)}")
        with self._lock:
            self._seq += 1
            self._q[kind].append((int(stamp), payload, self.clock(), self._seq))
            return self._match()

    def expire(self, max_wait_s: float) -> tuple[list[tuple], list[tuple]]:
        """Give up colour items that waited longer than max_wait_s (wall time) for a partner
        (their depth was lost, or the streams' stamps jumped); returns (pairs, unmatched) as
        `add` does - the items behind them may pair now."""
        with self._lock:
            now = self.clock()
            cq = self._q["color"]
            out = []
            while cq and now - cq[0][2] > max_wait_s:
                tc, c, _, _ = cq.popleft()
                out.append((tc, c))
            pairs, unmatched = self._match()
            return pairs, out + unmatched

    def _match(self) -> tuple[list[tuple], list[tuple]]:
        cq, dq = self._q["color"], self._q["depth"]
        tol = self.tolerance_ns
        pairs, unmatched = [], []
        while cq:
            tc, c, _, seq = cq[0]
            overflow = len(cq) > self.max_pending
            best, best_dt = -1, None
            for i, (td, _, _, _) in enumerate(dq):
                dt = abs(td - tc)
                if dt <= tol and (best_dt is None or dt < best_dt):
                    best, best_dt = i, dt
            if best >= 0:
                # final once a depth at or after tc + best_dt has arrived: a nearer one would
                # have to arrive out of order
                if overflow or any(td >= tc + best_dt for td, _, _, _ in dq):
                    td, d, _, _ = dq[best]
                    del dq[best]
                    cq.popleft()
                    pairs.append((tc, c, td, d))
                    continue
                break
            # given up once a depth that came *after* it is newer by more than the tolerance
            # (streams arrive in order; depth left over from before says nothing)
            if overflow or any(td > tc + tol and dseq > seq for td, _, _, dseq in dq):
                cq.popleft()
                unmatched.append((tc, c))
                continue
            break
        while len(dq) > self.max_pending:   # depth is kept by count, not by stamp: stamps may jump
            dq.popleft()
        return pairs, unmatched

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {k: len(v) for k, v in self._q.items()}

    def clear(self) -> None:
        with self._lock:
            for q in self._q.values():
                q.clear()


class StampedCache:
    """The last `max_items` items by stamp; `nearest(t, tol)` or None."""

    def __init__(self, max_items: int = 60):
        self.max_items = max_items
        self._t: list[int] = []
        self._v: list[Any] = []
        self._lock = threading.Lock()

    def add(self, stamp: int, value: Any) -> None:
        with self._lock:
            k = bisect.bisect(self._t, stamp)
            self._t.insert(k, int(stamp))
            self._v.insert(k, value)
            if len(self._t) > self.max_items:
                del self._t[0], self._v[0]

    def nearest(self, stamp: int, tolerance_ns: int) -> Any | None:
        with self._lock:
            if not self._t:
                return None
            k = bisect.bisect(self._t, stamp)
            cands = [i for i in (k - 1, k) if 0 <= i < len(self._t)]
            i = min(cands, key=lambda j: abs(self._t[j] - stamp))
            return self._v[i] if abs(self._t[i] - stamp) <= tolerance_ns else None

    def newest_stamp(self) -> int | None:
        with self._lock:
            return self._t[-1] if self._t else None

    def __len__(self) -> int:
        return len(self._t)


class DropCounter:
    """Counts dropped frames by reason; logs the first of each kind, then at most once per
    `throttle_s` per kind with the count since the last report."""

    def __init__(self, log: Callable[[str], None], throttle_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log, self.throttle_s, self.clock = log, throttle_s, clock
        self.counts: Counter = Counter()
        self._last_log: dict[str, float] = {}
        self._since: Counter = Counter()
        self._lock = threading.Lock()

    def drop(self, reason: str, message: str) -> None:
        with self._lock:
            self.counts[reason] += 1
            self._since[reason] += 1
            now = self.clock()
            last = self._last_log.get(reason)
            if last is not None and now - last < self.throttle_s:
                return
            n = self._since[reason]
            self._since[reason] = 0
            self._last_log[reason] = now
        more = "" if last is None else f" ({n} dropped for this reason since the last report)"
        self.log(f"dropped frame [{reason}]: {message}{more}")

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))
