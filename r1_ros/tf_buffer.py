"""A small transform buffer over tf2_msgs/TFMessage (tf2_ros is not available for these wheels).

    buf = TransformBuffer(cache_s=10.0)
    buf.add_tf_message(msg, static=False)                 # /tf, /tf_static (or add(...))
    T_map_cam = buf.lookup("map", "camera_color_optical_frame", t_ns, tolerance_ns)

Every frame has one parent (tf's tree). Static links are kept forever; dynamic links keep
`cache_s` of history, sorted by stamp, and are interpolated (linear translation, slerp
rotation) between the samples around the query time. A query outside a link's history by at
most `tolerance_ns` uses the nearest sample; beyond it the lookup raises PoseError with a
reason the fusion node counts:

    no_pose       the frames are unknown or not connected
    pose_pending  the query is newer than the newest sample (the transform may still arrive)
    stale_pose    the query is older than the kept history

ROS-free apart from reading message fields; r1_core.data.bags.TFBuffer (unbounded, for bag
files) is the reference the tests compare with.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

import numpy as np

from r1_ros.conversions import BadInput, quat_to_matrix, stamp_ns


class PoseError(ValueError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    d = float(np.dot(q0, q1))
    if d < 0.0:                       # the shorter arc
        q1, d = -q1, -d
    if d > 0.9995:                    # nearly parallel: lerp (slerp's limit), renormalised
        q = q0 + a * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - a) * th) * q0 + np.sin(a * th) * q1) / np.sin(th)


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(*q)
    T[:3, 3] = t
    return T


@dataclass
class _Link:
    parent: str
    times: list[int] = field(default_factory=list)
    trans: list[np.ndarray] = field(default_factory=list)
    quats: list[np.ndarray] = field(default_factory=list)


class TransformBuffer:
    """Thread-safe: the node's subscription callbacks add, its worker looks up."""

    def __init__(self, cache_s: float = 10.0):
        if not cache_s > 0:
            raise ValueError(f"cache_s must be > 0, got {cache_s}")
        self.cache_ns = int(cache_s * 1e9)
        self._static: dict[str, tuple[str, np.ndarray]] = {}
        self._dynamic: dict[str, _Link] = {}
        self._lock = threading.Lock()

    # ---- input ------------------------------------------------------------------------------
    def add(self, parent: str, child: str, t_ns: int, translation, quat_xyzw, static: bool = False) -> None:
        """One transform parent -> child (T_parent_child). A bad quaternion raises BadInput('bad_pose')."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise BadInput("bad_pose", f"transform with frames {parent!r} -> {child!r}")
        t = np.asarray(translation, np.float64)
        q = np.asarray(quat_xyzw, np.float64)
        if t.shape != (3,) or q.shape != (4,) or not (np.isfinite(t).all() and np.isfinite(q).all()):
            raise BadInput("bad_pose", f"transform {parent} -> {child}: non-finite translation/rotation")
        n = float(np.linalg.norm(q))
        if n < 1e-9:
            raise BadInput("bad_pose", f"transform {parent} -> {child}: zero quaternion")
        q = q / n
        with self._lock:
            if static:
                self._static[child] = (parent, _matrix(t, q))
                self._dynamic.pop(child, None)
                return
            link = self._dynamic.get(child)
            if link is None or link.parent != parent:      # new link, or re-parented: new history
                link = self._dynamic[child] = _Link(parent)
            k = bisect.bisect(link.times, t_ns)
            if k > 0 and link.times[k - 1] == t_ns:        # same stamp again: replace
                link.trans[k - 1], link.quats[k - 1] = t, q
                return
            link.times.insert(k, t_ns)
            link.trans.insert(k, t)
            link.quats.insert(k, q)
            cut = bisect.bisect_left(link.times, link.times[-1] - self.cache_ns)
            if cut:
                del link.times[:cut], link.trans[:cut], link.quats[:cut]

    def add_tf_message(self, msg, static: bool = False) -> int:
        """Add every transform of a tf2_msgs/TFMessage; returns how many were added. The first
        bad transform raises BadInput (the others are still added)."""
        err = None
        n = 0
        for ts in msg.transforms:
            r, v = ts.transform.rotation, ts.transform.translation
            try:
                self.add(ts.header.frame_id, ts.child_frame_id, stamp_ns(ts.header.stamp),
                         (v.x, v.y, v.z), (r.x, r.y, r.z, r.w), static)
                n += 1
            except BadInput as e:
                err = err or e
        if err is not None:
            raise err
        return n

    def clear(self) -> None:
        with self._lock:
            self._static.clear()
            self._dynamic.clear()

    def frames(self) -> list[str]:
        with self._lock:
            fs = set(self._static) | set(self._dynamic)
            fs |= {p for p, _ in self._static.values()} | {lk.parent for lk in self._dynamic.values()}
        return sorted(fs)

    # ---- lookup -----------------------------------------------------------------------------
    def _parent(self, child: str, t_ns: int, tol_ns: int) -> tuple[str, np.ndarray] | None:
        if child in self._static:
            return self._static[child]
        link = self._dynamic.get(child)
        if link is None:
            return None
        times = link.times
        if t_ns >= times[-1]:
            if t_ns - times[-1] > tol_ns:
                raise PoseError("pose_pending", f"no transform {link.parent} -> {child} at t={t_ns} ns yet: newest "
                                                f"is {(t_ns - times[-1]) * 1e-9:.3f} s older")
            return link.parent, _matrix(link.trans[-1], link.quats[-1])
        if t_ns <= times[0]:
            if times[0] - t_ns > tol_ns:
                raise PoseError("stale_pose", f"transform {link.parent} -> {child} at t={t_ns} ns is "
                                              f"{(times[0] - t_ns) * 1e-9:.3f} s older than the kept history")
            return link.parent, _matrix(link.trans[0], link.quats[0])
        k = bisect.bisect(times, t_ns)
        t0, t1 = times[k - 1], times[k]
        a = (t_ns - t0) / (t1 - t0)
        trans = (1 - a) * link.trans[k - 1] + a * link.trans[k]
        return link.parent, _matrix(trans, _slerp(link.quats[k - 1], link.quats[k], a))

    def _to_root(self, frame: str, t_ns: int, tol_ns: int) -> tuple[str, np.ndarray, list[str]]:
        T = np.eye(4)
        chain = [frame]
        while True:
            pt = self._parent(frame, t_ns, tol_ns)
            if pt is None:
                return frame, T, chain
            frame, Tp = pt
            T = Tp @ T
            chain.append(frame)
            if len(chain) > 64:
                raise PoseError("no_pose", f"transform loop through {chain[:8]}")

    def lookup(self, target: str, source: str, t_ns: int, tolerance_ns: int = 0) -> np.ndarray:
        """T_target_source at t (maps points in `source` into `target`); PoseError otherwise."""
        target, source = target.lstrip("/"), source.lstrip("/")
        if target == source:
            return np.eye(4)
        with self._lock:
            rs, Ts, cs = self._to_root(source, t_ns, tolerance_ns)
            rt, Tt, ct = self._to_root(target, t_ns, tolerance_ns)
        if rs != rt:
            raise PoseError("no_pose", f"no transform chain {target!r} <- {source!r}: {source!r} leads to "
                                       f"{' -> '.join(cs)}, {target!r} to {' -> '.join(ct)}")
        Tinv = np.eye(4)
        Tinv[:3, :3] = Tt[:3, :3].T
        Tinv[:3, 3] = -Tt[:3, :3].T @ Tt[:3, 3]
        return Tinv @ Ts
