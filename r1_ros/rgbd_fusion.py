"""rgbd_fusion: colour + depth + camera_info + pose -> fused coloured cloud, keyframes, status.

    r1 node rgbd_fusion --ros-args --params-file config/nodes.yaml \
        -r color/image_raw:=/camera/color/image_raw \
        -r depth/image_raw:=/camera/aligned_depth_to_color/image_raw \
        -r color/camera_info:=/camera/color/camera_info

Subscribes   color/image_raw, depth/image_raw (sensor_msgs/Image), color/camera_info,
             /tf + /tf_static (pose_source tf), pose (PoseStamped) or odom (Odometry)
Publishes    fused_cloud (PointCloud2, map frame, rate-limited, transient local),
             keyframes (r1_msgs/Keyframe, when the keyframe bank accepts a frame),
             fusion_status (r1_msgs/FusionStatus: at status_rate_hz, and each time a frame is
             finished - fused or dropped - so that an offline replayer can pace itself on it)
Services     ~/reset (std_srvs/Trigger), ~/save_map, ~/load_map (r1_msgs/MapFile)

A thin adapter over r1_core: r1_core.geometry.fusion.FusionMap integrates, r1_core.views
KeyframeBank decides keyframes. Subscription callbacks only pair colour and depth by stamp
(framesync.PairSync) and queue the pair; one worker thread waits (up to frame_wait) for the
pair's camera_info and pose, decodes, integrates, offers the keyframe and publishes the cloud.
Every unusable frame is dropped before it reaches the map, counted by reason in the status,
and logged once per kind (then throttled): too_large, bad_encoding, bad_image, size_mismatch,
no_valid_depth (NaN/zero depth), unregistered_depth (depth in another frame than colour),
no_camera_info, no_pose, stale_pose, out_of_order,
unsynced (no depth partner), overload (queue full), and FusionMap's own reasons. Overload is
right for a live camera (the newest frames matter); an offline replay avoids it with
backpressure instead (bag_replay wait_for_fusion: it publishes a frame only once this node's
fusion_status shows the earlier ones finished). A frame whose pose at its stamp has not come
within frame_wait_s is fused at the nearest pose within max_pose_age_s: not a drop, but the map
then depends on when the pose arrived, so such frames are counted (frames_older_pose) and the
first is logged.
With `depth_source: estimated` (RGB-only cameras) depth is predicted from colour by the
Depth Anything branch of the model (r1_core.model.depth.DepthBranch).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from tf2_msgs.msg import TFMessage

from r1_msgs.msg import FusionStatus, Keyframe
from r1_msgs.srv import MapFile

from r1_core.geometry.fusion import FusionMap
from r1_core.geometry.rgbd import FrameError, intrinsics_from_camera_info
from r1_core.views.bank import KeyframeBank
from r1_ros import qos
from r1_ros.configs import FusionNodeConfig, shared_defaults
from r1_ros.conversions import (BadInput, check_image_size, cloud_to_pointcloud2, image_to_array,
                                keyframe_to_msg, ns_to_stamp, stamp_ns)
from r1_ros.framesync import DropCounter, PairSync, StampedCache
from r1_ros.params import DataclassParameters
from r1_ros.runtime import run_node
from r1_ros.tf_buffer import PoseError, TransformBuffer

POSE_FRAME = "r1/pose_source"     # the virtual child frame that PoseStamped/Odometry poses fill


@dataclass
class _Frame:
    stamp: int
    color: Any                      # sensor_msgs/Image, or None when `bad` is set
    depth: Any                      # sensor_msgs/Image, or None (estimated depth / bad)
    arrived: float                  # time.monotonic() when the pair was complete
    bad: tuple[str, str] | None = None


class RgbdFusionNode(Node):
    def __init__(self, **kwargs):
        super().__init__("rgbd_fusion", **kwargs)
        self.params = DataclassParameters(self, FusionNodeConfig, on_change=self._on_config,
                                          defaults=shared_defaults(FusionNodeConfig))
        cfg = self.cfg = self.params.config
        self.get_logger().info(f"fusion: voxel {cfg.fusion.voxel_size} m, pixel stride {cfg.fusion.pixel_stride}, "
                               f"depth from {cfg.depth_source}, pose from {cfg.pose_source}")
        self.fmap = FusionMap(cfg.fusion)
        self.bank = KeyframeBank(cfg.bank)
        self.map_id = time.time_ns()      # when this map began: reset and load_map begin a new one
        self.tf = TransformBuffer(cfg.tf_cache_s)
        self.sync = PairSync(int(cfg.sync_tolerance_s * 1e9), max_pending=cfg.queue_size)
        self.infos = StampedCache(max_items=2 * cfg.queue_size + 60)    # covers every queued frame
        self.drops = DropCounter(self.get_logger().warning, cfg.log_throttle_s)
        self.ignored = DropCounter(self.get_logger().warning, cfg.log_throttle_s)   # non-frame inputs
        self.depth_model = None
        if cfg.depth_source == "estimated":
            from r1_core.model.depth import DepthBranch

            self.depth_model = DepthBranch(cfg.depth_model_path or None, out_dim=1, tiny=cfg.depth_model_tiny)
        self.frames_in = 0
        self.frames_fused = 0
        self.frames_older_pose = 0
        self.last_stamp = -(1 << 62)
        self.last_fused_stamp = 0
        self._odom_child = ""
        self._pending: deque[_Frame] = deque()
        self._cv = threading.Condition()
        self._map_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._map_changed = False
        self._refined_due = False                # the last cloud was a preview
        self._last_cloud = 0.0
        self._last_fused_wall = 0.0
        self._stop = threading.Event()
        self.stop_requested = threading.Event()
        self.exit_code = 0
        self._worker = threading.Thread(target=self._run, name="r1-fusion", daemon=True)

        # one mutually exclusive group for every input: the callbacks only queue work, and one
        # group keeps all messages in arrival order (a reentrant group reorders a stream)
        inputs = color_g = depth_g = MutuallyExclusiveCallbackGroup()
        services = MutuallyExclusiveCallbackGroup()
        # reader history as deep as the frame queue: a reliable KEEP_LAST reader overwrites
        # unread samples, so a short history loses frames whenever the executor is held up
        sensor = qos.sensor(max(10, cfg.queue_size), best_effort=cfg.camera_qos == "best_effort")
        self.create_subscription(Image, "color/image_raw", self._on_color, sensor, callback_group=color_g)
        if cfg.depth_source == "topic":
            self.create_subscription(Image, "depth/image_raw", self._on_depth, sensor, callback_group=depth_g)
        self.create_subscription(CameraInfo, "color/camera_info", self._on_info, sensor, callback_group=inputs)
        self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), qos.TF, callback_group=inputs)
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), qos.TF_STATIC_SUB,
                                 callback_group=inputs)
        if cfg.pose_source == "pose":
            self.create_subscription(PoseStamped, "pose", self._on_pose, qos.TF, callback_group=inputs)
        elif cfg.pose_source == "odometry":
            self.create_subscription(Odometry, "odom", self._on_odom, qos.TF, callback_group=inputs)
        self.cloud_pub = self.create_publisher(PointCloud2, "fused_cloud", qos.CLOUD)
        self.keyframe_pub = self.create_publisher(Keyframe, "keyframes", qos.keyframes(cfg.keyframe_history))
        self.status_pub = self.create_publisher(FusionStatus, "fusion_status", qos.STATUS)
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=services)
        self.create_service(MapFile, "~/save_map", self._srv_save, callback_group=services)
        self.create_service(MapFile, "~/load_map", self._srv_load, callback_group=services)
        self.create_timer(1.0 / cfg.status_rate_hz, self._publish_status, callback_group=services)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._worker.is_alive():
            self._worker.start()

    def close(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker.is_alive():
            self._worker.join(timeout=10.0)

    def _on_config(self, cfg: FusionNodeConfig) -> None:
        self.cfg = cfg
        self.sync.tolerance_ns = int(cfg.sync_tolerance_s * 1e9)
        self.drops.throttle_s = self.ignored.throttle_s = cfg.log_throttle_s

    # ---- inputs (executor threads: keep cheap) --------------------------------------------------
    def _size_problem(self, msg, what: str) -> tuple[str, str] | None:
        try:
            check_image_size(msg, what, self.cfg.max_image_pixels)
        except BadInput as e:
            return e.reason, str(e)
        return None

    def _on_color(self, msg) -> None:
        with self._count_lock:
            self.frames_in += 1
        t = stamp_ns(msg.header.stamp)
        bad = self._size_problem(msg, "colour")
        if self.cfg.depth_source == "estimated":
            self._enqueue(_Frame(t, None if bad else msg, None, time.monotonic(), bad))
            return
        self._sync("color", t, (None if bad else msg, bad))

    def _on_depth(self, msg) -> None:
        t = stamp_ns(msg.header.stamp)
        bad = self._size_problem(msg, "depth")
        self._sync("depth", t, (None if bad else msg, bad))

    def _sync(self, kind: str, t: int, item) -> None:
        self._paired(*self.sync.add(kind, t, item))

    def _paired(self, pairs: list, unmatched: list) -> None:
        tol = self.cfg.sync_tolerance_s
        for tc, _ in unmatched:
            self.drops.drop("unsynced", f"colour image at t={tc * 1e-9:.3f} s has no depth image within {tol} s")
        if unmatched:
            self._publish_status()
        for tc, (c, cbad), td, (d, dbad) in pairs:
            self._enqueue(_Frame(tc, c, d, time.monotonic(), cbad or dbad))

    def _on_info(self, msg) -> None:
        self.infos.add(stamp_ns(msg.header.stamp), msg)

    def _on_tf(self, msg, static: bool) -> None:
        try:
            self.tf.add_tf_message(msg, static=static)
        except BadInput as e:
            self.ignored.drop("bad_transform", f"{'/tf_static' if static else '/tf'}: {e}")

    def _add_pose(self, header, pose) -> None:
        o, p_ = pose.orientation, pose.position
        try:
            self.tf.add(header.frame_id, POSE_FRAME, stamp_ns(header.stamp), (p_.x, p_.y, p_.z), (o.x, o.y, o.z, o.w))
        except BadInput as e:
            self.ignored.drop("bad_pose_message", str(e))

    def _on_pose(self, msg) -> None:
        self._add_pose(msg.header, msg.pose)

    def _on_odom(self, msg) -> None:
        self._odom_child = msg.child_frame_id
        self._add_pose(msg.header, msg.pose.pose)

    def _enqueue(self, frame: _Frame) -> None:
        old = None
        with self._cv:
            if len(self._pending) >= self.cfg.queue_size:
                old = self._pending.popleft()
                self.drops.drop("overload", f"fusion queue full ({self.cfg.queue_size} frames): dropped the frame "
                                            f"at t={old.stamp * 1e-9:.3f} s; lower the input rate or raise "
                                            f"fusion.pixel_stride")
            self._pending.append(frame)
            self._cv.notify()
        if old is not None:
            self._publish_status()

    # ---- worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:   # a bug, not bad input: stop the node loudly (r1 up reports it)
            import traceback

            self.get_logger().fatal(f"fusion worker crashed: {type(e).__name__}: {e}\n{traceback.format_exc()}")
            self.exit_code = 1
            self.stop_requested.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                if not self._pending:
                    self._cv.wait(timeout=0.05)
                # taken off the queue while processed, so an overflow never drops the frame in hand
                frame = self._pending.popleft() if self._pending else None
            if frame is not None:
                if self._process(frame):
                    self._publish_status()               # finished: the per-frame acknowledgement
                else:
                    with self._cv:
                        self._pending.appendleft(frame)  # still waiting for its camera_info / pose
                    time.sleep(0.003)
            if self.depth_model is None:
                self._paired(*self.sync.expire(max(1.0, 2 * self.cfg.frame_wait_s)))
            self._maybe_publish_cloud()

    def _pose(self, image_frame: str, t: int, tol: int) -> np.ndarray:
        cfg = self.cfg
        if cfg.pose_source == "tf":
            return self.tf.lookup(cfg.map_frame, image_frame, t, tol)
        T = self.tf.lookup(cfg.map_frame, POSE_FRAME, t, tol)
        child = cfg.pose_child_frame or (self._odom_child if cfg.pose_source == "odometry" else "") or image_frame
        if child.lstrip("/") != image_frame.lstrip("/"):
            T = T @ self.tf.lookup(child, image_frame, t, tol)
        return T

    def _process(self, f: _Frame) -> bool:
        """Fuse or drop the frame (True), or False to wait for its camera_info / pose."""
        cfg = self.cfg
        if f.bad is not None:
            self.drops.drop(*f.bad)
            return True
        if f.stamp <= self.last_stamp:
            self.drops.drop("out_of_order", f"frame at t={f.stamp * 1e-9:.3f} s is not newer than the last fused "
                                            f"frame (t={self.last_stamp * 1e-9:.3f} s)")
            return True
        waited = time.monotonic() - f.arrived
        tol = int(cfg.sync_tolerance_s * 1e9)
        info = self.infos.nearest(f.stamp, tol)
        if info is None:
            if waited < cfg.frame_wait_s:
                return False
            newest = self.infos.newest_stamp()
            have = "none received yet" if newest is None else f"newest at t={newest * 1e-9:.3f} s"
            self.drops.drop("no_camera_info", f"no camera_info within {cfg.sync_tolerance_s} s of the frame at "
                                              f"t={f.stamp * 1e-9:.3f} s ({have})")
            return True
        image_frame = f.color.header.frame_id or info.header.frame_id
        depth_frame = f.depth.header.frame_id if f.depth is not None else ""
        if depth_frame and image_frame and depth_frame.lstrip("/") != image_frame.lstrip("/"):
            # same-size depth from the depth camera's own frame would be fused misaligned
            self.drops.drop("unregistered_depth", f"depth is in frame {depth_frame!r}, colour in {image_frame!r}: "
                                                  "fusion needs depth registered to the colour camera (e.g. the "
                                                  "driver's aligned_depth_to_color topic)")
            return True
        older_pose = ""                   # why the frame is fused at an older pose, if it is
        try:
            try:
                # at the frame's stamp (interpolated between the samples around it) while the
                # transform may still be on its way (pending: on another topic, in another
                # callback), or the chain is not complete yet (e.g. /tf_static arriving after the
                # first images): wait up to frame_wait_s. Taking the nearest older sample at once
                # (max_pose_age_s) would fuse the frame at an older pose whenever the worker
                # happens to be idle when it arrives, so the map would depend on timing.
                T = self._pose(image_frame, f.stamp, 0)
            except PoseError as e:
                if e.reason in ("pose_pending", "no_pose") and waited < cfg.frame_wait_s:
                    return False
                T = self._pose(image_frame, f.stamp, int(cfg.max_pose_age_s * 1e9))
                older_pose = f"no pose at its stamp after {waited:.2f} s ({e})"
        except PoseError as e:
            reason = "stale_pose" if e.reason == "pose_pending" else e.reason
            self.drops.drop(reason, f"{cfg.map_frame} <- {image_frame}: {e}")
            return True
        try:
            color = image_to_array(f.color, "color")
            if self.depth_model is not None:
                # a writable copy: torch warns on (and must not write to) the message's buffer
                depth = self.depth_model.predict_depth(np.array(color)).astype(np.float32)
            else:
                depth = image_to_array(f.depth, "depth")
            intr = intrinsics_from_camera_info(info.k, info.width, info.height, info.d, info.distortion_model)
        except (BadInput, FrameError) as e:
            self.drops.drop(e.reason, str(e))
            return True
        if color.shape[:2] != depth.shape:
            self.drops.drop("size_mismatch", f"colour is {color.shape[1]}x{color.shape[0]} but depth is "
                                              f"{depth.shape[1]}x{depth.shape[0]}")
            return True
        with self._map_lock:
            res = self.fmap.integrate(color, depth, intr, T)
            if res.fused:
                self.frames_fused += 1
                self.last_stamp = self.last_fused_stamp = f.stamp
                self._map_changed = True
                self._last_fused_wall = time.monotonic()
                bank, map_id = self.bank, self.map_id       # the map this frame went into
        if not res.fused:
            self.drops.drop(res.reason or "rejected", res.message)
            return True
        if older_pose:
            # not a drop, but the map now depends on when the pose arrived: counted in the status,
            # the first one logged
            self.frames_older_pose += 1
            if self.frames_older_pose == 1:
                self.get_logger().warning(
                    f"frame at t={f.stamp * 1e-9:.3f} s fused at a pose up to max_pose_age_s "
                    f"({cfg.max_pose_age_s} s) from its stamp: {older_pose}; counted in "
                    f"fusion_status.frames_older_pose, later ones not logged")
        if cfg.publish_keyframes:
            try:
                inserted = bank.offer(color, depth, intr.K, T, f.stamp * 1e-9)
            except ValueError as e:       # the bank's own input checks; the map already has the frame
                self.ignored.drop("keyframe_rejected", str(e))
                inserted = False
            if inserted:
                kf = bank.keyframes()[-1]
                header = Header(stamp=f.color.header.stamp, frame_id=cfg.map_frame)
                self.keyframe_pub.publish(keyframe_to_msg(kf, header, image_frame, map_id))
        return True

    def _maybe_publish_cloud(self) -> None:
        """Rate-limited cloud publishing. Snapshots cost the worker time it would spend fusing
        (a refined one ~1 s per 500k voxels, a preview ~0.2 s): a due cloud waits while frames
        are queued (up to 4 periods), and with cloud_refine=idle the clouds published while
        frames stream are previews, followed by one refined cloud once the stream pauses."""
        cfg = self.cfg
        now = time.monotonic()
        period = 1.0 / cfg.cloud_rate_hz
        quiet = now - self._last_fused_wall >= cfg.cloud_idle_s
        if self._map_changed:
            since = now - self._last_cloud
            if since < period or (self._pending and since < 4 * period):
                return
            refine = cfg.cloud_refine == "always" or (cfg.cloud_refine == "idle" and quiet)
        elif self._refined_due and quiet and cfg.cloud_refine == "idle":
            refine = True
        else:
            return
        with self._map_lock:
            records = self.fmap.snapshot_records(refine=refine)
            self._map_changed = False
            stamp = self.last_fused_stamp
        self._refined_due = not refine
        self._last_cloud = time.monotonic()
        header = Header(stamp=ns_to_stamp(stamp) if stamp > 0 else self.get_clock().now().to_msg(),
                        frame_id=cfg.map_frame)
        self.cloud_pub.publish(cloud_to_pointcloud2(records, header))

    # ---- status and services ----------------------------------------------------------------------
    def status(self) -> FusionStatus:
        drops = self.drops.snapshot()
        m = FusionStatus()
        m.header.stamp = self.get_clock().now().to_msg()
        m.header.frame_id = self.cfg.map_frame
        m.frames_in = self.frames_in
        m.frames_fused = self.frames_fused
        m.frames_older_pose = self.frames_older_pose
        m.frames_dropped = sum(drops.values())
        m.drop_reasons = list(drops)
        m.drop_counts = list(drops.values())
        m.num_voxels = len(self.fmap)
        m.num_keyframes = len(self.bank)
        m.voxel_size = float(self.cfg.fusion.voxel_size)
        m.map_id = self.map_id
        return m

    def _publish_status(self) -> None:
        self.status_pub.publish(self.status())

    def _srv_reset(self, req, res):
        with self._map_lock:
            self.fmap.clear()
            self.bank = KeyframeBank(self.cfg.bank)
            self.last_stamp = -(1 << 62)
            self.map_id = time.time_ns()
            self._map_changed = True
        self._publish_status()            # the new map_id, before any keyframe of the new map
        res.success, res.message = True, "fusion map and keyframe bank cleared"
        self.get_logger().info(res.message)
        return res

    def _srv_save(self, req, res):
        try:
            with self._map_lock:
                path = self.fmap.save(req.path)
                n = len(self.fmap)
        except (OSError, ValueError) as e:
            res.success, res.message = False, f"cannot save the map to {req.path!r}: {e}"
            return res
        res.success, res.message, res.num_voxels = True, f"saved {n} voxels to {path}", n
        return res

    def _srv_load(self, req, res):
        try:
            fmap = FusionMap.load(req.path, config=self.cfg.fusion)
        except (OSError, ValueError) as e:
            res.success, res.message = False, f"cannot load a map from {req.path!r}: {e}"
            return res
        with self._map_lock:
            self.fmap = fmap
            self.bank = KeyframeBank(self.cfg.bank)     # views of the map it replaces
            self.map_id = time.time_ns()
            self._map_changed = True
            n = len(fmap)
        self._publish_status()
        res.success, res.message, res.num_voxels = True, f"loaded {n} voxels from {req.path}", n
        self.get_logger().info(res.message)
        return res


def main(args: list[str] | None = None) -> int:
    return run_node(RgbdFusionNode, args, threads=4)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
