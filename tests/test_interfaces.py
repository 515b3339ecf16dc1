"""The r1_msgs contract: types import, and each service and the action round-trip across two
processes through rclpy (DDS on loopback, private domain id — see conftest.py)."""
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros


def test_interface_types_import_with_fields():
    from r1_msgs.action import Reason
    from r1_msgs.msg import Box3D, FusionStatus, Keyframe
    from r1_msgs.srv import Ask, Ground, MapFile, SelectViews
    from tf2_msgs.msg import TFMessage

    box = Box3D()
    assert {"header", "center", "size", "yaw", "label", "score"} <= set(box.get_fields_and_field_types())
    assert "r1_msgs/Box3D" in Ground.Response.get_fields_and_field_types()["boxes"]
    assert set(Ask.Request.get_fields_and_field_types()) == {"question", "history", "num_views"}
    assert Reason.Goal.TASK_PLANNING == "planning"
    assert Reason.Feedback.STAGE_SELECTING_VIEWS == "selecting_views"
    assert "steps" in Reason.Result.get_fields_and_field_types()
    assert "transforms" in TFMessage.get_fields_and_field_types()
    for t in (Keyframe, FusionStatus, MapFile.Request, SelectViews.Response):
        t()


@pytest.fixture(scope="module")
def ros_client():
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "helpers" / "trivial_server.py")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert server.stdout.readline().strip() == "READY"
    rclpy.init()
    node = rclpy.create_node("r1_interface_test_client")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    yield node
    executor.shutdown()
    spin.join()
    node.destroy_node()
    rclpy.shutdown()
    server.stdin.close()
    assert server.wait(timeout=30) == 0


def _call(node, srv_type, name, request):
    client = node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=30), f"service {name} did not appear"
    result = client.call(request, timeout_sec=30)
    node.destroy_client(client)
    assert result is not None, f"{name}: no response"
    return result


def test_ground_round_trip(ros_client):
    from r1_msgs.srv import Ground

    res = _call(ros_client, Ground, "ground", Ground.Request(expression="the red chair next to the bed"))
    assert res.success and res.answer == "found: the red chair next to the bed"
    (box,) = res.boxes
    assert box.header.frame_id == "map" and box.label == "chair"
    assert (box.center.x, box.center.y, box.center.z) == (1.0, 2.0, 0.5)
    assert (box.size.x, box.size.y, box.size.z, box.yaw) == (0.5, 0.6, 0.9, 0.25)


def test_ask_round_trip(ros_client):
    from r1_msgs.srv import Ask

    res = _call(ros_client, Ask, "ask", Ask.Request(question="how many chairs?", history=["hi", "hello"]))
    assert res.success and res.answer == "how many chairs?|hi/hello"


def _action_client(node):
    from rclpy.action import ActionClient

    from r1_msgs.action import Reason

    client = ActionClient(node, Reason, "reason")
    assert client.wait_for_server(timeout_sec=30)
    return client


def _wait(future, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not future.done():
        assert time.monotonic() < deadline, "timed out waiting for the action"
        time.sleep(0.01)
    return future.result()


def test_reason_action_streams_feedback_and_result(ros_client):
    from r1_msgs.action import Reason

    client = _action_client(ros_client)
    feedback = []
    goal = Reason.Goal(task=Reason.Goal.TASK_PLANNING, text="go to the bed")
    handle = _wait(client.send_goal_async(goal, feedback_callback=lambda m: feedback.append(m.feedback)))
    assert handle.accepted
    result = _wait(handle.get_result_async()).result
    assert result.success and list(result.steps) == ["go", "to", "the", "bed"]
    assert [f.text_delta for f in feedback] == ["go", "to", "the", "bed"]
    assert all(f.stage == Reason.Feedback.STAGE_GENERATING for f in feedback)
    client.destroy()


def test_reason_action_cancel(ros_client):
    from action_msgs.msg import GoalStatus

    from r1_msgs.action import Reason

    client = _action_client(ros_client)
    got_feedback = threading.Event()
    goal = Reason.Goal(task="qa", text=" ".join(["w"] * 200))  # 10 s of feedback unless canceled
    handle = _wait(client.send_goal_async(goal, feedback_callback=lambda m: got_feedback.set()))
    assert got_feedback.wait(10)
    _wait(handle.cancel_goal_async())
    res = _wait(handle.get_result_async(), timeout=5)
    assert res.status == GoalStatus.STATUS_CANCELED
    assert res.result.message == "canceled"
    client.destroy()
