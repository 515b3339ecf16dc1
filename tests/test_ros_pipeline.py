"""The r1 graph across processes, started by `r1 up`'s BringUp: a synthetic bag is replayed ->
rgbd_fusion publishes the fused cloud -> scene_reasoner (a tiny checkpoint with scripted
answers, r1_ros.testing) grounds a request to a box in the map frame that is one of the
model's proposals for that cloud; Ask; SelectViews; the Reason action streams feedback and
is cancelled; a full queue rejects at once; failing requests and timeouts leave the node
serving; run-time parameters are validated; lifecycle transitions; clean SIGINT shutdown."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from r1_ros.testing import ASK_TEXT, GROUND_TEXT, PLAIN_TEXT, PLAN_TEXT, scripted_checkpoint

from r1_ros.graph import local_dds_environment  # noqa: E402

pytestmark = pytest.mark.ros
# The r1 nodes run with the shared-memory Fast DDS profile (r1_ros.graph.local_dds_environment);
# this process's own participants must use it too, and Fast DDS reads it once per process, at
# the first participant: set it while the test modules are collected, before any rclpy.init().
os.environ.update(local_dds_environment())
ROOT = Path(__file__).resolve().parent.parent
FRAMES = 30


class Client:
    def __init__(self):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from r1_msgs.msg import FusionStatus
        from r1_ros import qos

        rclpy.init()
        self.node = rclpy.create_node("pipeline_test_client")
        self.status = None
        self.cloud = None
        self.cloud_time = 0.0
        self.markers: list = []
        self.node.create_subscription(FusionStatus, "fusion_status", lambda m: setattr(self, "status", m), qos.STATUS)
        self.node.create_subscription(PointCloud2, "fused_cloud", self._on_cloud, qos.CLOUD)
        self.node.create_subscription(MarkerArray, "answer_markers", self.markers.append, qos.CLOUD)
        self.executor = MultiThreadedExecutor(num_threads=4)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self._clients: dict = {}

    def _on_cloud(self, msg) -> None:
        self.cloud, self.cloud_time = msg, time.monotonic()

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        rclpy.shutdown()

    def client(self, srv_type, name: str, timeout: float = 120.0):
        if name not in self._clients:
            c = self.node.create_client(srv_type, name)
            assert c.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
            self._clients[name] = c
        return self._clients[name]

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        fut = self.client(srv_type, name).call_async(request)
        wait(fut.done, f"{name} response", timeout)
        return fut.result()

    def action(self):
        from rclpy.action import ActionClient

        from r1_msgs.action import Reason

        if "reason" not in self._clients:
            c = ActionClient(self.node, Reason, "reason")
            assert c.wait_for_server(timeout_sec=60)
            self._clients["reason"] = c
        return self._clients["reason"]

    def set_params(self, node: str, values: dict):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        params = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        return self.call(SetParameters, f"/{node}/set_parameters", SetParameters.Request(parameters=params)).results


def wait(cond, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """`r1 up` (BringUp) on a 30-frame synthetic bag with the scripted checkpoint; the replay is
    resumed once every node is up, and the fixture returns when the last frame is fused."""
    from r1_core.data.synthetic.demo import ensure_demo_assets
    from r1_ros.bringup import BringUp

    tmp = tmp_path_factory.mktemp("pipeline")
    ckpt = scripted_checkpoint(num_views=2)
    assets = ensure_demo_assets(tmp / "demo", frames=FRAMES)
    params = yaml.safe_load((ROOT / "config" / "nodes.yaml").read_text())
    params["scene_reasoner"]["ros__parameters"]["torch_threads"] = 1          # a tiny model
    params["scene_reasoner"]["ros__parameters"].setdefault("service", {}).update(num_views=2, max_queue=1, max_batch=1)
    params["rgbd_fusion"]["ros__parameters"].update(status_rate_hz=10.0, cloud_rate_hz=2.0, queue_size=FRAMES)
    params_file = tmp / "nodes.yaml"
    params_file.write_text(yaml.safe_dump(params))
    log_path = tmp / "nodes.log"
    log = open(log_path, "w")
    up = BringUp({"params_file": str(params_file), "bag": str(assets.bag), "bag_start_paused": "true",
                  "checkpoint": str(ckpt)}, stdout=log, stderr=log).start()
    client = Client()
    state = {"up": up, "client": client, "log": log_path, "ckpt": ckpt, "codes": None}
    try:
        from std_srvs.srv import Trigger

        from r1_msgs.srv import Ground

        client.client(Ground, "ground", 180)                # the model is loaded
        assert client.call(Trigger, "/bag_replay/resume", Trigger.Request()).success

        def fused():
            s = client.status
            return s is not None and s.frames_in == FRAMES and s.frames_fused + s.frames_dropped == FRAMES

        wait(fused, "the bag to be fused", 120)
        t_done = time.monotonic()
        # the refined cloud after the stream pauses is the last one (cloud_refine: idle)
        wait(lambda: client.cloud_time > t_done and time.monotonic() - client.cloud_time > 4.0, "the final cloud", 60)
        yield state
    finally:
        client.close()
        if state["codes"] is None:
            state["codes"] = up.stop()
        log.close()


def _tail(graph) -> str:
    return "\n".join(Path(graph["log"]).read_text().splitlines()[-40:])


def test_replay_fuses_and_ground_returns_a_proposal_box_in_the_map_frame(graph):
    from visualization_msgs.msg import Marker

    from r1_core.model.checkpoint import load_checkpoint
    from r1_msgs.srv import Ground
    from r1_ros.conversions import pointcloud2_to_cloud

    c = graph["client"]
    s = c.status
    assert s.frames_fused >= FRAMES // 2 and s.num_keyframes >= 2, s
    assert c.cloud.header.frame_id == "map" and c.cloud.width > 10000
    res = c.call(Ground, "ground", Ground.Request(expression=GROUND_TEXT))
    assert res.success, res.message + "\n" + _tail(graph)
    assert res.reasoning == "red chair" and res.answer.startswith("<box>")
    (box,) = res.boxes
    assert box.header.frame_id == "map"
    got = np.array([box.center.x, box.center.y, box.center.z, box.size.x, box.size.y, box.size.z, box.yaw])
    model, _ = load_checkpoint(graph["ckpt"])
    proposals = model.encode_scene(pointcloud2_to_cloud(c.cloud)).boxes
    assert np.allclose(got, proposals[3], atol=0.0051), (got, proposals[3])     # <ref>3</ref>, 2-decimal text
    assert box.label                                   # the proposal's class name
    wait(lambda: any(m.type == Marker.CUBE for a in c.markers for m in a.markers), "answer markers", 10)
    cube = next(m for a in c.markers for m in a.markers if m.type == Marker.CUBE)
    assert cube.header.frame_id == "map"
    assert np.allclose([cube.pose.position.x, cube.pose.position.y, cube.scale.z], [got[0], got[1], got[5]], atol=1e-4)


def test_ask_and_select_views(graph):
    from visualization_msgs.msg import Marker

    from r1_msgs.srv import Ask, SelectViews

    c = graph["client"]
    res = c.call(Ask, "ask", Ask.Request(question=ASK_TEXT))
    assert res.success and res.answer.startswith("the red chair <box>") and len(res.boxes) == 1, res.message
    wait(lambda: c.markers and any(m.type == Marker.CUBE for m in c.markers[-1].markers), "the answer's box", 10)
    res = c.call(Ask, "ask", Ask.Request(question=PLAIN_TEXT))
    assert res.success and res.answer == "white" and len(res.boxes) == 0, res.message
    # an answer without a box clears the last answer's markers (they used to stay on screen)
    wait(lambda: [m.action for m in c.markers[-1].markers] == [Marker.DELETEALL], "the markers to clear", 10)
    res = c.call(SelectViews, "select_views", SelectViews.Request(text="the red chair next to the bed", k=2))
    assert res.success and len(res.keyframes) == 2 and len(res.scores) == 2
    for kf in res.keyframes:
        assert kf.header.frame_id == "map" and kf.color.encoding == "rgb8" and kf.depth.encoding == "16UC1"
        assert kf.color.width == 320 and kf.camera_info.width == 320
        q = kf.pose.orientation
        assert abs(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2 - 1) < 1e-6
    assert len({kf.id for kf in res.keyframes}) == 2


def _start_rambler(c, feedback: list, max_new_tokens: int = 4000):
    from r1_msgs.action import Reason

    fut = c.action().send_goal_async(Reason.Goal(task="planning", text=PLAN_TEXT, max_new_tokens=max_new_tokens),
                                     feedback_callback=lambda m: feedback.append(m.feedback))
    wait(fut.done, "goal acceptance", 30)
    handle = fut.result()
    assert handle.accepted
    return handle


def test_reason_streams_feedback_and_cancel_stops_generation(graph):
    from action_msgs.msg import GoalStatus

    from r1_msgs.action import Reason

    c = graph["client"]
    feedback: list = []
    handle = _start_rambler(c, feedback)
    wait(lambda: sum(1 for f in feedback if f.text_delta) >= 5, "streamed text", 60)
    t0 = time.monotonic()
    cancel = handle.cancel_goal_async()
    wait(cancel.done, "the cancel response", 10)
    res_fut = handle.get_result_async()
    wait(res_fut.done, "the cancelled result", 10)
    res = res_fut.result()
    assert time.monotonic() - t0 < 5.0
    assert res.status == GoalStatus.STATUS_CANCELED and res.result.message == "canceled"
    stages = [f.stage for f in feedback]
    assert stages[:3] == [Reason.Feedback.STAGE_ENCODING_SCENE, Reason.Feedback.STAGE_SELECTING_VIEWS,
                          Reason.Feedback.STAGE_GENERATING]
    text = "".join(f.text_delta for f in feedback)
    assert text.startswith("<think>go go go")
    tokens = [f.tokens_generated for f in feedback if f.text_delta]
    assert tokens == sorted(tokens) and tokens[-1] < 4000    # stopped long before max_new_tokens
    assert len(feedback) < tokens[-1]                        # deltas are coalesced (feedback_rate_hz)


def test_full_queue_rejects_at_once_and_queued_request_is_served(graph):
    from r1_msgs.srv import Ground

    c = graph["client"]
    feedback: list = []
    handle = _start_rambler(c, feedback)            # occupies the worker (max_batch 1)
    wait(lambda: any(f.text_delta for f in feedback), "generation to start", 60)
    queued = c.client(Ground, "ground").call_async(Ground.Request(expression=GROUND_TEXT))   # fills the queue (1)
    time.sleep(1.0)
    t0 = time.monotonic()
    rejected = c.call(Ground, "ground", Ground.Request(expression=GROUND_TEXT), timeout=10)
    assert time.monotonic() - t0 < 3.0
    assert not rejected.success and "request queue full (1 waiting)" in rejected.message
    assert not queued.done()
    wait(handle.cancel_goal_async().done, "cancel", 10)
    wait(queued.done, "the queued request", 60)
    assert queued.result().success and len(queued.result().boxes) == 1


def test_a_burst_of_requests_gets_an_answer_for_every_one(graph):
    # the services' request history used to be the default keep-last-10: a burst overwrote the
    # oldest requests before the executor took them, and their callers waited forever
    from r1_msgs.srv import Ground

    from r1_ros import qos

    c = graph["client"]
    # keep-all on the client's side too: 40 replies at once would overwrite a keep-last-10 history
    client = c.node.create_client(Ground, "ground", qos_profile=qos.SERVICES)
    assert client.wait_for_service(timeout_sec=30)
    futures = [client.call_async(Ground.Request(expression=GROUND_TEXT)) for _ in range(40)]
    wait(lambda: all(f.done() for f in futures), f"answers to all {len(futures)} requests", 120)
    results = [f.result() for f in futures]
    assert all(r.success or "request queue full" in r.message for r in results), {r.message for r in results}
    assert any(r.success for r in results)


def test_failing_requests_do_not_stop_the_node(graph):
    from action_msgs.msg import GoalStatus

    from r1_msgs.action import Reason
    from r1_msgs.srv import Ground

    c = graph["client"]
    res = c.call(Ground, "ground", Ground.Request(expression="  "))
    assert not res.success and "needs a non-empty text" in res.message
    res = c.call(Ground, "ground", Ground.Request(expression="where " * 600))     # fails inside the model
    assert not res.success and "exceeds max_length" in res.message
    for goal, why in ((Reason.Goal(task="juggling", text="x"), "unknown task 'juggling'"),
                      (Reason.Goal(task="object_caption"), "needs target_box")):
        fut = c.action().send_goal_async(goal)
        wait(fut.done, "goal", 30)
        r = fut.result().get_result_async()
        wait(r.done, "result", 30)
        assert r.result().status == GoalStatus.STATUS_ABORTED and why in r.result().result.message
    res = c.call(Ground, "ground", Ground.Request(expression=GROUND_TEXT))
    assert res.success and len(res.boxes) == 1


def test_request_timeout_and_parameter_validation(graph):
    from action_msgs.msg import GoalStatus

    c = graph["client"]
    (r,) = c.set_params("scene_reasoner", {"service.request_timeout_s": -1.0})
    assert not r.successful and "request_timeout_s" in r.reason
    (r,) = c.set_params("scene_reasoner", {"service.max_queue": 5})
    assert not r.successful and "read-only" in r.reason
    (r,) = c.set_params("scene_reasoner", {"service.request_timeout_s": 1.5})
    assert r.successful, r.reason
    try:
        t0 = time.monotonic()
        handle = _start_rambler(c, [])
        res = handle.get_result_async()
        wait(res.done, "the timed-out result", 30)
        assert res.result().status == GoalStatus.STATUS_ABORTED
        assert "timed out after" in res.result().result.message
        assert time.monotonic() - t0 < 15
    finally:
        (r,) = c.set_params("scene_reasoner", {"service.request_timeout_s": 120.0})
        assert r.successful


def test_lifecycle_deactivate_unloads_and_activate_reloads(graph):
    from action_msgs.msg import GoalStatus
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from r1_msgs.srv import Ground

    c = graph["client"]
    assert c.call(GetState, "/scene_reasoner/get_state", GetState.Request()).current_state.label == "active"
    # requests in flight when the node deactivates (as on shutdown) get their reply ("service
    # shutting down") before the servers go, and a running generation stops at its next token:
    # they used to get no reply at all, after the node had waited for the generation to end
    feedback: list = []
    handle = _start_rambler(c, feedback)                         # runs for 4000 tokens
    wait(lambda: any(f.text_delta for f in feedback), "generation to start", 60)
    queued = c.client(Ground, "ground").call_async(Ground.Request(expression=GROUND_TEXT))
    result = handle.get_result_async()
    time.sleep(1.0)
    t0 = time.monotonic()
    assert c.call(ChangeState, "/scene_reasoner/change_state",
                  ChangeState.Request(transition=Transition(id=Transition.TRANSITION_DEACTIVATE))).success
    assert time.monotonic() - t0 < 10
    wait(lambda: result.done() and queued.done(), "replies to the requests in flight", 10)
    assert result.result().status == GoalStatus.STATUS_ABORTED
    assert result.result().result.message == "service shutting down"
    assert not queued.result().success and queued.result().message == "service shutting down"
    assert c.call(GetState, "/scene_reasoner/get_state", GetState.Request()).current_state.label == "inactive"
    wait(lambda: not c.client(Ground, "ground").service_is_ready(), "ground to go away", 10)
    assert c.call(ChangeState, "/scene_reasoner/change_state",
                  ChangeState.Request(transition=Transition(id=Transition.TRANSITION_ACTIVATE)), timeout=120).success
    res = c.call(Ground, "ground", Ground.Request(expression=GROUND_TEXT), timeout=120)
    assert res.success and len(res.boxes) == 1


def test_a_fusion_reset_drops_the_old_maps_keyframes_downstream(graph):
    # view_selector and scene_reasoner used to keep offering the cleared map's keyframes as views
    from std_srvs.srv import Trigger

    from r1_msgs.srv import Ground, SelectViews

    c = graph["client"]
    before = c.call(SelectViews, "select_views", SelectViews.Request(text=GROUND_TEXT, k=2))
    assert len(before.keyframes) == 2 and before.keyframes[0].map_id == c.status.map_id > 0
    assert c.call(Trigger, "/rgbd_fusion/reset", Trigger.Request()).success
    wait(lambda: c.status.num_voxels == 0, "the reset map", 10)

    def views():
        return c.call(SelectViews, "select_views", SelectViews.Request(text=GROUND_TEXT, k=2)).keyframes

    wait(lambda: len(views()) == 0, "view_selector to drop the old map's keyframes", 10)
    wait(lambda: "[scene_reasoner]: a new fusion map" in Path(graph["log"]).read_text(),
         "scene_reasoner to drop the old map's keyframes", 10)
    res = c.call(Ground, "ground", Ground.Request(expression=GROUND_TEXT))
    assert not res.success and "no scene" in res.message, res.message


def test_graph_stops_cleanly_on_sigint(graph):
    graph["codes"] = graph["up"].stop()
    log = Path(graph["log"]).read_text()
    assert graph["codes"] == {"rgbd_fusion": 0, "view_selector": 0, "scene_reasoner": 0, "bag_replay": 0}, log[-4000:]
    assert "terminate called" not in log and "Traceback" not in log, log[-4000:]
