"""QoS profiles of the r1 topics (ROS2_NOTES.md: BEST_EFFORT / sensor-data QoS silently drops
~1 MB messages on the default transports here, so images, clouds and keyframes are RELIABLE).

    IMAGES     reliable, keep last 10, volatile         camera images and camera_info
    CLOUD      reliable, keep last 1, transient local   the fused map: late joiners get the latest
    KEYFRAMES  reliable, keep last N, transient local   late joiners get the recent keyframes
    STATUS     reliable, keep last 10, volatile
    TF         reliable, keep last 100, volatile        /tf
    TF_STATIC  reliable, keep last 1, transient local   /tf_static (as tf2 publishes it)
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def _p(depth: int, durable: bool = False) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if durable else DurabilityPolicy.VOLATILE)


IMAGES = _p(10)
CLOUD = _p(1, durable=True)
STATUS = _p(10)
TF = _p(100)
TF_STATIC = _p(1, durable=True)
TF_STATIC_SUB = _p(100, durable=True)     # a subscriber gets every static publisher's latest


def sensor(depth: int) -> QoSProfile:
    """Reliable sensor streams (images, camera_info) with the given history depth."""
    return _p(depth)


def keyframes(depth: int) -> QoSProfile:
    return _p(depth, durable=True)
