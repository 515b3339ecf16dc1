"""Local DDS defaults: discovery stays on loopback unless the user chose otherwise.

ROS 2 Kilted ignores ROS_LOCALHOST_ONLY; with default settings Fast DDS discovery multicasts
out of the machine's network interface. Every r1 entry point that starts rclpy calls
`ensure_local_dds()` first, before `rclpy.init()`.
"""
from __future__ import annotations

import os

DISCOVERY_VAR = "ROS_AUTOMATIC_DISCOVERY_RANGE"


def ensure_local_dds() -> str:
    """Default ROS_AUTOMATIC_DISCOVERY_RANGE to LOCALHOST; return the value in effect.

    A value the user set explicitly (e.g. SUBNET on a real robot network) is kept.
    """
    return os.environ.setdefault(DISCOVERY_VAR, "LOCALHOST")
