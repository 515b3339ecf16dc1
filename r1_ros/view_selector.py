"""view_selector: keeps the keyframe bank and serves the views that best support a request.

    r1 node view_selector --ros-args --params-file config/nodes.yaml
    # a client: SelectViews(text="the red chair next to the bed", k=4) -> keyframes, scores

Subscribes   keyframes (r1_msgs/Keyframe from rgbd_fusion; transient local, so a late start
             still receives the recent ones)
Serves       select_views (r1_msgs/SelectViews)

The bank (r1_core.views.KeyframeBank) keeps every keyframe it receives within its bounds:
rgbd_fusion already applied the keyframe criterion (configs.downstream_bank). Selection is
r1_core.views' selector (`selector.method`). What this node lacks is the model's object
proposals: the request's words cannot be resolved to target boxes here, so the dynamic
selector's relevance terms are zero and its choice follows coverage and redundancy (the
scene_reasoner selects in-process, with the proposals; see scene_reasoner.py).
"""
from __future__ import annotations

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node

from r1_ros import qos
from r1_ros.configs import ViewSelectorNodeConfig, downstream_bank, shared_defaults
from r1_ros.conversions import MapKeyframes, keyframe_to_msg, ns_to_stamp
from r1_ros.framesync import DropCounter
from r1_ros.params import DataclassParameters
from r1_ros.runtime import run_node


def empty_scene():
    """A SceneEncoding without proposals (this node has no model)."""
    import torch

    from r1_core.model.r1model import SceneEncoding

    return SceneEncoding(torch.zeros((0, 1)), np.zeros((0, 7), np.float32), np.zeros(0, np.float32),
                         np.zeros(0, np.int64))


class ViewSelectorNode(Node):
    def __init__(self, **kwargs):
        super().__init__("view_selector", **kwargs)
        self.params = DataclassParameters(self, ViewSelectorNodeConfig, on_change=self._on_config,
                                          defaults=shared_defaults(ViewSelectorNodeConfig))
        cfg = self.cfg = self.params.config
        from r1_core.views.bank import KeyframeBank
        from r1_core.views.select import make_selector

        from r1_msgs.msg import FusionStatus, Keyframe
        from r1_msgs.srv import SelectViews

        self.bank = KeyframeBank(downstream_bank(cfg.bank))
        self.selector = make_selector(self.bank, cfg.selector)
        self.scene = empty_scene()
        self.ignored = DropCounter(self.get_logger().warning, 30.0)
        self.keyframes = MapKeyframes(self.bank, self.ignored, self.get_logger().info)
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Keyframe, "keyframes", self.keyframes.on_keyframe, qos.keyframes(100),
                                 callback_group=inputs)
        self.create_subscription(FusionStatus, "fusion_status", self.keyframes.on_status, qos.STATUS,
                                 callback_group=inputs)
        self.create_service(SelectViews, "select_views", self._srv_select,
                            callback_group=MutuallyExclusiveCallbackGroup(), qos_profile=qos.SERVICES)

    def _on_config(self, cfg: ViewSelectorNodeConfig) -> None:
        self.cfg = cfg

    def select(self, text: str, k: int):
        """(keyframes, scores) for a request text: the same r1_core selection the reasoner runs."""
        from r1_core.query import SceneQuery
        from r1_core.views.select import DynamicSelector

        query = SceneQuery("qa", text) if text.strip() else SceneQuery("dense_caption")
        snap = self.bank.snapshot()
        idx = self.selector.select_indices(query, self.scene, k, snap) if len(snap) else []
        if isinstance(self.selector, DynamicSelector) and idx:
            s = self.selector.scores(query, self.scene, snap)
            util = s.utility(self.selector.weights.weights().detach().numpy())
            scores = [float(util[i]) for i in idx]
        else:
            scores = [1.0] * len(idx)
        return [snap.keyframes[i] for i in idx], scores

    def _srv_select(self, req, res):
        from std_msgs.msg import Header

        k = int(req.k) or self.cfg.default_k
        try:
            kfs, scores = self.select(req.text, k)
        except ValueError as e:
            res.success, res.message = False, f"bad request: {e}"
            return res
        res.keyframes = [keyframe_to_msg(kf, Header(stamp=ns_to_stamp(int(kf.stamp * 1e9)), frame_id=self.cfg.map_frame),
                                         map_id=self.keyframes.map_id) for kf in kfs]
        res.scores = scores
        res.success = True
        res.message = "" if kfs else "the keyframe bank is empty"
        return res


def main(args: list[str] | None = None) -> int:
    return run_node(ViewSelectorNode, args, threads=3)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
