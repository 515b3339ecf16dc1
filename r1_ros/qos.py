"""QoS profiles of the r1 topics. Measured here: BEST_EFFORT (sensor-data QoS) silently drops
~1 MB messages on the default transports, so images, clouds and keyframes are RELIABLE by default;
rgbd_fusion's `camera_qos: best_effort` subscribes to a sensor-data camera driver instead.

    sensor(n)  reliable (or best effort), keep last n, volatile   camera images and camera_info
               (rgbd_fusion: n = max(10, queue_size))
    CLOUD      reliable, keep last 1, transient local   the fused map: late joiners get the latest
    KEYFRAMES  reliable, keep last N, transient local   late joiners get the recent keyframes
    STATUS     reliable, keep last 10, volatile
    TF         reliable, keep last 100, volatile        /tf
    TF_STATIC  reliable, keep last 1, transient local   /tf_static (as tf2 publishes it)
    SERVICES   reliable, keep all, volatile             the request services and the Reason action:
               a burst of requests is queued, not overwritten (the default keeps the last 10, and
               a caller whose request was overwritten waits forever); the service answers each,
               if need be with "request queue full"
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def _p(depth: int, durable: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if durable else DurabilityPolicy.VOLATILE)


CLOUD = _p(1, durable=True)
SERVICES = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
STATUS = _p(10)
TF = _p(100)
TF_STATIC = _p(1, durable=True)
TF_STATIC_SUB = _p(100, durable=True)     # a subscriber gets every static publisher's latest


def sensor(depth: int, best_effort: bool = False) -> QoSProfile:
    """Sensor streams (images, camera_info) with the given history depth: reliable, or best effort
    (which also receives from reliable publishers)."""
    q = _p(depth)
    if best_effort:
        q.reliability = ReliabilityPolicy.BEST_EFFORT
    return q


def keyframes(depth: int) -> QoSProfile:
    return _p(depth, durable=True)
