"""bag_replay: publish a recorded rosbag2 (mcap or sqlite3) as the live sensors would.

    r1 node bag_replay --ros-args -p bag:=~/.cache/r1/demo/demo_bag -p rate:=1.0 -p loop:=true

Reads with rosbags and forwards each record's CDR bytes unchanged (`publish(raw)`: no
deserialisation) on the recorded topic names, paced by the recorded times divided by `rate`.
`restamp` shifts every header stamp (and every transform stamp of tf2_msgs/TFMessage) by
(now - start of the pass), so a replayed run looks live and time keeps moving forward across
`loop`s; for messages that start with a std_msgs/Header the stamp is patched in the CDR bytes
in place (it sits right after the 4-byte encapsulation header), TFMessage is re-serialised.
`start_paused` waits for ~/resume (std_srvs/Trigger); ~/pause pauses. /tf_static is published
transient-local as tf2 does; other topics reliable (images ~1 MB: see qos.py).

Backpressure (`wait_for_fusion`, for offline runs: `r1 demo`, `r1 eval-bag`): rgbd_fusion drops
frames as `overload` when they come faster than it fuses them, which is right for a live camera
but makes an offline result depend on the machine's load. With wait_for_fusion the replay
publishes frame k (the k-th message on `frame_topic`) only once rgbd_fusion has finished
(fused or dropped) all but `max_frames_in_flight` - 1 of the frames before it, as counted by its
`fusion_status` (published after every finished frame). The other topics wait with it; after a
wait the replay keeps the recorded spacing of the messages, and their (restamped) header stamps
stay as recorded - a frame's camera_info and pose, published before the wait, keep matching it.
If rgbd_fusion finishes no frame for `fusion_timeout_s`, the node fails (exit code 1) naming the
frame and the last status it got.
"""
from __future__ import annotations

import importlib
import struct
import threading
import time
from pathlib import Path

from rclpy.node import Node

from r1_ros import qos
from r1_ros.configs import BagReplayConfig, resolve_path
from r1_ros.params import DataclassParameters
from r1_ros.runtime import run_node

TF_TYPE = "tf2_msgs/msg/TFMessage"


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> sensor_msgs.msg.Image (ValueError naming the type if absent)."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"message type {msgtype} is not installed here ({e})") from None


def shift_header_stamp(raw: bytes, offset_ns: int) -> bytes:
    """CDR bytes of a message whose first field is std_msgs/Header, with header.stamp shifted
    by offset_ns (the stamp is int32 sec + uint32 nanosec at bytes 4..12)."""
    if len(raw) < 12:
        raise ValueError(f"CDR message of {len(raw)} bytes is too short for a header")
    end = "<" if raw[1] & 1 else ">"          # encapsulation kind: CDR_LE = 0x0001, CDR_BE = 0x0000
    sec, nsec = struct.unpack_from(end + "iI", raw, 4)
    t = sec * 1_000_000_000 + nsec + offset_ns
    if t < 0:
        raise ValueError(f"restamped time {t} ns is negative")
    view = memoryview(raw)                   # one copy of a ~1 MB image, not two
    return b"".join((view[:4], struct.pack(end + "iI", t // 1_000_000_000, t % 1_000_000_000), view[12:]))


class Restamper:
    """Shifts the stamps of one bag's messages (see module docstring)."""

    def __init__(self, typestore):
        self.ts = typestore
        self._header_first: dict[str, bool] = {}

    def header_first(self, msgtype: str) -> bool:
        hit = self._header_first.get(msgtype)
        if hit is None:
            fields = self.ts.fielddefs[msgtype][1]
            hit = bool(fields) and fields[0][1][1] == "std_msgs/msg/Header"
            self._header_first[msgtype] = hit
        return hit

    def __call__(self, raw, msgtype: str, offset_ns: int) -> bytes:
        if offset_ns == 0:
            return bytes(raw)
        if self.header_first(msgtype):
            return shift_header_stamp(raw, offset_ns)
        if msgtype == TF_TYPE:
            msg = self.ts.deserialize_cdr(bytes(raw), msgtype)
            for tr in msg.transforms:
                t = tr.header.stamp.sec * 1_000_000_000 + tr.header.stamp.nanosec + offset_ns
                tr.header.stamp.sec, tr.header.stamp.nanosec = t // 1_000_000_000, t % 1_000_000_000
            return bytes(self.ts.serialize_cdr(msg, msgtype))
        return bytes(raw)


class BagReplayNode(Node):
    def __init__(self, **kwargs):
        super().__init__("bag_replay", **kwargs)
        self.params = DataclassParameters(self, BagReplayConfig, on_change=self._on_config)
        cfg = self.cfg = self.params.config
        if not cfg.bag:
            raise ValueError("bag_replay: parameter 'bag' is empty; give a rosbag2 directory (bag:=/path/to/bag)")
        from rosbags.highlevel import AnyReader, AnyReaderError

        from r1_core.data.bags import typestore

        self.path = resolve_path(cfg.bag)
        if not self.path.exists():
            raise ValueError(f"bag_replay: bag not found: {self.path}")
        self.ts = typestore()
        self.reader = AnyReader([Path(self.path)], default_typestore=self.ts)
        try:
            self.reader.open()
        except (AnyReaderError, OSError) as e:
            raise ValueError(f"bag_replay: cannot open {self.path} as a rosbag2: {type(e).__name__}: {e}") from None
        conns = self.reader.connections
        topics = {c.topic for c in conns}
        missing = [t for t in cfg.topics if t not in topics]
        if missing:
            raise ValueError(f"bag_replay: topics {missing} are not in {self.path}; it has {sorted(topics)}")
        self.connections = [c for c in conns if not cfg.topics or c.topic in cfg.topics]
        self.publishers_ = {}
        for c in self.connections:
            if c.topic in self.publishers_:
                continue
            if c.msgtype == TF_TYPE:
                profile = qos.TF_STATIC if c.topic.endswith("tf_static") else qos.TF
            else:
                profile = qos.sensor(cfg.qos_depth)
            self.publishers_[c.topic] = self.create_publisher(message_class(c.msgtype), c.topic, profile)
        self.restamp = Restamper(self.ts)
        self.published = 0
        self.passes = 0
        self.finished = threading.Event()
        self._paused = threading.Event()
        if cfg.start_paused:
            self._paused.set()
        self._stop = threading.Event()
        self.stop_requested = threading.Event()
        self.exit_code = 0
        self._rate_changed = threading.Event()
        self.frames_sent = 0                  # messages published on frame_topic (wait_for_fusion)
        self._fusion_cv = threading.Condition()
        self._fusion_status = None            # the latest r1_msgs/FusionStatus and when it came
        self._fusion_status_time = 0.0
        if cfg.wait_for_fusion:
            if cfg.frame_topic not in {c.topic for c in self.connections}:
                raise ValueError(f"bag_replay: wait_for_fusion: frame_topic {cfg.frame_topic!r} is not replayed "
                                 f"from {self.path}; it has {sorted(self.publishers_)}")
            from r1_msgs.msg import FusionStatus

            self._status_sub = self.create_subscription(FusionStatus, "fusion_status", self._on_fusion_status,
                                                        qos.STATUS)
        from std_srvs.srv import Trigger

        self.create_service(Trigger, "~/resume", self._srv_resume)
        self.create_service(Trigger, "~/pause", self._srv_pause)
        self._thread = threading.Thread(target=self._run, name="r1-replay", daemon=True)
        n = sum(c.msgcount for c in self.connections)
        self.get_logger().info(f"replaying {self.path} ({n} messages on {len(self.publishers_)} topics) at "
                               f"{cfg.rate}x{', looping' if cfg.loop else ''}{', restamped' if cfg.restamp else ''}"
                               f"{', paced by rgbd_fusion (wait_for_fusion)' if cfg.wait_for_fusion else ''}"
                               f"{'; paused until ~/resume' if cfg.start_paused else ''}")

    def _on_config(self, cfg: BagReplayConfig) -> None:
        if cfg.rate != self.cfg.rate:
            self._rate_changed.set()
        self.cfg = cfg

    def start(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._paused.clear()
        with self._fusion_cv:
            self._fusion_cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self.reader.close()

    def _on_fusion_status(self, msg) -> None:
        with self._fusion_cv:
            self._fusion_status, self._fusion_status_time = msg, time.monotonic()
            self._fusion_cv.notify_all()

    @staticmethod
    def _finished(status) -> int:
        return int(status.frames_fused) + int(status.frames_dropped)

    def _fusion_base(self) -> int:
        """rgbd_fusion's finished-frame count before this replay's first frame (from its first
        status: it publishes one at least every 1 / status_rate_hz)."""
        deadline = time.monotonic() + self.cfg.fusion_timeout_s
        with self._fusion_cv:
            while self._fusion_status is None and not self._stop.is_set():
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"wait_for_fusion: no r1_msgs/FusionStatus arrived on "
                        f"{self.resolve_topic_name('fusion_status')} within {self.cfg.fusion_timeout_s} s, so no "
                        f"frame of {self.path} was published; is rgbd_fusion running in this namespace?")
                self._fusion_cv.wait(0.2)
            return 0 if self._fusion_status is None else self._finished(self._fusion_status)

    def _wait_for_fusion(self, base: int) -> None:
        """Block until fewer than max_frames_in_flight of the frames sent so far are unfinished
        by rgbd_fusion (`base`: its finished count before this replay's first frame); raise
        RuntimeError, naming the frame and the last status, after fusion_timeout_s without a
        finished frame."""
        cfg = self.cfg
        with self._fusion_cv:
            done, deadline = -1, 0.0
            while not self._stop.is_set():
                s = self._fusion_status
                finished = self._finished(s) - base
                if self.frames_sent - finished < cfg.max_frames_in_flight:
                    return
                if finished > done:                   # the timeout counts from the last finished frame
                    done, deadline = finished, time.monotonic() + cfg.fusion_timeout_s
                elif time.monotonic() >= deadline:
                    age = time.monotonic() - self._fusion_status_time
                    break
                self._fusion_cv.wait(0.2)
            else:
                return                                # stopping
        raise RuntimeError(
            f"wait_for_fusion: rgbd_fusion finished no frame for {cfg.fusion_timeout_s} s, so frame "
            f"{self.frames_sent + 1} ({cfg.frame_topic}) of {self.path} was not published: its last status on "
            f"{self.resolve_topic_name('fusion_status')} ({age:.1f} s old) counts {done} of the {self.frames_sent} "
            f"frames sent so far as finished (fused {s.frames_fused}, dropped {s.frames_dropped}, received "
            f"{s.frames_in} since it started); does it get this bag's depth, camera_info and poses?")

    def _srv_resume(self, req, res):
        was = self._paused.is_set()
        self._paused.clear()
        res.success, res.message = True, "resumed" if was else "was not paused"
        return res

    def _srv_pause(self, req, res):
        self._paused.set()
        res.success, res.message = True, "paused"
        return res

    def _wait_for_subscribers(self) -> None:
        deadline = time.monotonic() + self.cfg.wait_subscribers_s
        while not self._stop.is_set():
            missing = [t for t, pub in self.publishers_.items() if pub.get_subscription_count() == 0]
            if not missing:
                return
            if time.monotonic() >= deadline:
                self.get_logger().warning(f"no subscriber on {missing} after {self.cfg.wait_subscribers_s} s; "
                                          f"replaying anyway")
                return
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self._replay()
        except BaseException as e:   # a bug or an unreadable bag: stop the node loudly
            import traceback

            self.get_logger().fatal(f"replay crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            self.exit_code = 1
            self.stop_requested.set()

    def _replay(self) -> None:
        start = self.reader.start_time + int(self.cfg.start_offset_s * 1e9)
        self._wait_for_subscribers()
        base = None
        while not self._stop.is_set():
            while self._paused.is_set() and not self._stop.is_set():
                time.sleep(0.02)
            offset = self.get_clock().now().nanoseconds - start if self.cfg.restamp else 0
            anchor_wall, anchor_bag = time.monotonic(), start
            for conn, t_ns, raw in self.reader.messages(connections=self.connections, start=start):
                if self._stop.is_set():
                    return
                if self.cfg.wait_for_fusion and conn.topic == self.cfg.frame_topic:
                    waited_from = time.monotonic()
                    if base is None:                  # rgbd_fusion's count before our first frame
                        base = self._fusion_base()
                    self._wait_for_fusion(base)
                    if self._stop.is_set():
                        return
                    # the later messages keep their recorded spacing after the wait; their stamps
                    # are not shifted: this frame's camera_info and pose went out before it
                    anchor_wall += time.monotonic() - waited_from
                if self._paused.is_set():
                    paused_at = time.monotonic()
                    while self._paused.is_set() and not self._stop.is_set():
                        time.sleep(0.02)
                    anchor_wall += time.monotonic() - paused_at
                    if self.cfg.restamp:
                        offset += int((time.monotonic() - paused_at) * 1e9)
                if self._rate_changed.is_set():        # re-anchor at the current position
                    self._rate_changed.clear()
                    anchor_wall, anchor_bag = time.monotonic(), t_ns
                due = anchor_wall + (t_ns - anchor_bag) * 1e-9 / self.cfg.rate
                delay = due - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                    if self._stop.is_set():
                        return
                data = self.restamp(raw, conn.msgtype, offset) if offset else bytes(raw)
                self.publishers_[conn.topic].publish(data)
                self.published += 1
                if conn.topic == self.cfg.frame_topic:
                    self.frames_sent += 1
            self.passes += 1
            if not self.cfg.loop:
                break
        self.get_logger().info(f"replay finished: {self.published} messages in {self.passes} pass(es)")
        self.finished.set()


def main(args: list[str] | None = None) -> int:
    return run_node(BagReplayNode, args, threads=2)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
