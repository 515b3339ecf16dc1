"""A trivial server of the r1_msgs services and action, for the cross-process round-trip test.

    python tests/helpers/trivial_server.py   # prints READY when its services are up

Ground echoes the expression into the answer and returns one box; Ask echoes question and
history; Reason streams one feedback per word of the goal text and honours cancellation.
"""
import sys
import threading
import time

import rclpy
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node

from r1_msgs.action import Reason
from r1_msgs.msg import Box3D
from r1_msgs.srv import Ask, Ground


class TrivialServer(Node):
    def __init__(self) -> None:
        super().__init__("trivial_r1_server")
        group = ReentrantCallbackGroup()
        self.create_service(Ground, "ground", self.ground, callback_group=group)
        self.create_service(Ask, "ask", self.ask, callback_group=group)
        self._action = ActionServer(
            self, Reason, "reason", self.execute, callback_group=group,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
        )

    def ground(self, req, res):
        box = Box3D()
        box.header.frame_id = "map"
        box.center.x, box.center.y, box.center.z = 1.0, 2.0, 0.5
        box.size.x, box.size.y, box.size.z = 0.5, 0.6, 0.9
        box.yaw, box.label, box.score = 0.25, "chair", 0.9
        res.success, res.boxes = True, [box]
        res.answer, res.reasoning = f"found: {req.expression}", "because"
        return res

    def ask(self, req, res):
        res.success = True
        res.answer = f"{req.question}|{'/'.join(req.history)}"
        return res

    def execute(self, handle):
        words = handle.request.text.split()
        for i, w in enumerate(words):
            if handle.is_cancel_requested:
                handle.canceled()
                return Reason.Result(success=False, message="canceled")
            fb = Reason.Feedback(stage=Reason.Feedback.STAGE_GENERATING, text_delta=w, tokens_generated=i + 1)
            handle.publish_feedback(fb)
            time.sleep(0.05)
        handle.succeed()
        return Reason.Result(success=True, answer=" ".join(words), steps=list(words))


def main() -> None:
    rclpy.init()
    node = TrivialServer()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    print("READY", flush=True)
    try:
        sys.stdin.read()  # exit when the test closes our stdin
    finally:
        executor.shutdown()
        spin.join()
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    main()
