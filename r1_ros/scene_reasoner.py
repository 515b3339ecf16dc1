"""scene_reasoner: the 3D-VLM behind ROS services and an action (a lifecycle node).

    r1 node scene_reasoner --ros-args --params-file config/nodes.yaml -p model.checkpoint:=runs/nano/final

Subscribes   fused_cloud (PointCloud2, the scene), keyframes (r1_msgs/Keyframe, for view selection)
Serves       ground (r1_msgs/Ground), ask (r1_msgs/Ask), reason (r1_msgs/Reason action: feedback
             streams the stage and the generated text; cancel stops generation)
Publishes    answer_markers (visualization_msgs/MarkerArray of answer boxes, map frame)

Lifecycle (llama_ros style): configure reads and checks the parameters and subscribes;
activate loads the model once and starts r1_core.service.ReasoningService (bounded queue,
batching, timeouts) and the servers; deactivate stops them and frees the model; with
`autostart: true` (the default; no lifecycle manager needed) the node configures and
activates itself at start.

View selection runs in this process over a keyframe bank fed by the keyframe topic (the same
r1_core.views bank and selector as the view_selector node). Why not call view_selector's
SelectViews: request-aware selection needs the model's object proposals (SceneEncoding) for
the request's targets, which only this process has and SelectViews cannot carry, and each
call would ship k full keyframes (~0.4 MB each) through DDS per request.

A full queue answers at once with the service's QueueFull message; a request that runs past
`service.request_timeout_s` fails with a message saying so; a request that fails for any
reason (bad input, malformed model output, an error inside the model) fails alone - the
worker and the node keep serving.
"""
from __future__ import annotations

import threading
import time
import traceback
from typing import Callable

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from r1_ros import qos
from r1_ros.configs import ReasonerNodeConfig, downstream_bank, resolve_path, shared_defaults
from r1_ros.conversions import (BadInput, MapKeyframes, boxes_to_markers, boxes_to_msgs, msg_to_box,
                                pointcloud2_to_cloud)
from r1_ros.framesync import DropCounter
from r1_ros.params import DataclassParameters
from r1_ros.runtime import run_node

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def check_model_source(cfg: ReasonerNodeConfig) -> None:
    """ValueError naming what is wrong when `device` is CUDA and torch sees no such device, or no
    preset is set and the checkpoint directory is missing."""
    if cfg.device.startswith("cuda"):
        import torch

        index = int(cfg.device[5:]) if cfg.device.startswith("cuda:") else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ValueError(f"device {cfg.device!r}: torch sees {torch.cuda.device_count()} CUDA device(s) "
                             f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); use device:=cpu")
    if cfg.model.preset:
        return
    path = resolve_path(cfg.model.checkpoint)
    if not path.is_dir():
        raise ValueError(f"model.checkpoint: no r1 checkpoint directory at {path} (from {cfg.model.checkpoint!r}); "
                         f"train one (training/) and pass model.checkpoint:=<dir>, or set model.preset:=smollm2-135m "
                         f"to run the backbone with an untrained encoder (answers will not be useful)")


def load_model(cfg: ReasonerNodeConfig):
    """(R1Model in eval mode on cfg.device, extra tensors of the checkpoint). ValueError with a
    clear message when the checkpoint is missing or does not load."""
    from r1_core.model.checkpoint import CheckpointError, load_checkpoint
    from r1_core.model.r1model import ModelConfig, R1Model

    check_model_source(cfg)
    if cfg.model.preset:
        model = R1Model(ModelConfig(backbone=cfg.model.preset, dtype=cfg.model.dtype))
        return model.to(cfg.device).eval(), {}
    path = resolve_path(cfg.model.checkpoint)
    try:
        return load_checkpoint(path, device=cfg.device, overrides={"dtype": cfg.model.dtype})
    except CheckpointError as e:
        raise ValueError(f"model.checkpoint: {e}") from None


class SceneReasonerNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("scene_reasoner", **kwargs)
        self.params = DataclassParameters(self, ReasonerNodeConfig, on_change=self._on_config,
                                          defaults=shared_defaults(ReasonerNodeConfig))
        self.cfg: ReasonerNodeConfig = self.params.config
        svc = self.cfg.service
        # requests block an executor thread while they wait: enough threads for a full queue,
        # a running batch and the subscriptions, so a rejection is always answered at once
        self.executor_threads = svc.max_queue + svc.max_batch + 4
        self.stop_requested = threading.Event()
        self.exit_code = 0
        self.service = None
        self.model = None
        self.bank = self.selector = None
        self._error = ""
        self._cloud_lock = threading.Lock()
        self._cloud: np.ndarray | None = None
        self._cloud_header = None
        self._cloud_version = 0
        self._servers: list = []
        self._subs: list = []
        self.marker_pub = None
        self.ignored = DropCounter(self.get_logger().warning, 30.0)
        self._requests = ReentrantCallbackGroup()
        self._inputs = MutuallyExclusiveCallbackGroup()
        self._in_flight = 0               # requests inside run_request (their callers await a reply)
        self._in_flight_lock = threading.Lock()

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """autostart: configure and activate (run_node calls this once the executor spins)."""
        if not self.cfg.autostart:
            self.get_logger().info("waiting for lifecycle transitions (autostart is off)")
            return
        for name, trigger in (("configure", self.trigger_configure), ("activate", self.trigger_activate)):
            if trigger() != SUCCESS:          # on_configure / on_activate log the reason
                raise ValueError(f"{name} failed")

    def close(self) -> None:
        state = self._state_machine.current_state[1]
        if state == "active":
            self.trigger_deactivate()
            state = self._state_machine.current_state[1]
        elif self.service is not None:    # a stop interrupted on_activate after the service started
            self.service.stop()
            self.service = None
        if state == "inactive":
            self.trigger_cleanup()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from r1_core.views.bank import KeyframeBank
        from r1_core.views.select import make_selector
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from r1_msgs.msg import FusionStatus, Keyframe

        cfg = self.cfg
        try:
            check_model_source(cfg)
        except ValueError as e:
            self._error = str(e)
            self.get_logger().error(self._error)
            return FAILURE
        self.bank = KeyframeBank(downstream_bank(cfg.bank))
        keyframes = MapKeyframes(self.bank, self.ignored, self.get_logger().info)
        self._subs = [
            self.create_subscription(PointCloud2, "fused_cloud", self._on_cloud, qos.CLOUD, callback_group=self._inputs),
            self.create_subscription(Keyframe, "keyframes", keyframes.on_keyframe, qos.keyframes(100),
                                     callback_group=self._inputs),
            self.create_subscription(FusionStatus, "fusion_status", keyframes.on_status, qos.STATUS,
                                     callback_group=self._inputs),
        ]
        self.marker_pub = self.create_lifecycle_publisher(MarkerArray, "answer_markers", qos.CLOUD)
        self._make_selector = lambda extra: make_selector(self.bank, cfg.selector, **self._selector_kwargs(extra))
        self.get_logger().info("configured")
        return SUCCESS

    def _selector_kwargs(self, extra: dict) -> dict:
        """Fitted view-selection weights shipped in the checkpoint, unless the config names a file."""
        if self.cfg.selector.method != "dynamic" or self.cfg.selector.weights_file:
            return {}
        if any(k.startswith("view_selection.") for k in extra):
            from r1_core.views.select import ViewScorerWeights

            return {"weights": ViewScorerWeights.from_tensors(extra, source=str(self.cfg.model.checkpoint))}
        return {}

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        from rclpy.action import ActionServer, CancelResponse, GoalResponse

        from r1_core.data.classes import nyu40_name
        from r1_core.service import ReasoningService
        from r1_msgs.action import Reason
        from r1_msgs.srv import Ask, Ground

        cfg = self.cfg
        if cfg.torch_threads > 0:
            import torch
            torch.set_num_threads(cfg.torch_threads)
        t0 = time.monotonic()
        what = f"preset {cfg.model.preset} (untrained encoder)" if cfg.model.preset else cfg.model.checkpoint
        self.get_logger().info(f"loading the model: {what} on {cfg.device}")
        try:
            self.model, extra = load_model(cfg)
            selector = self._make_selector(extra)
        except ValueError as e:
            self._error = str(e)
            self.get_logger().error(self._error)
            return FAILURE
        except Exception as e:      # rclpy's lifecycle swallows it: log it, fail the transition
            self._error = f"loading the model failed: {type(e).__name__}: {e}"
            self.get_logger().error(f"{self._error}\n{traceback.format_exc()}")
            return FAILURE

        def label(i: int) -> str:
            try:
                return nyu40_name(int(i))
            except (KeyError, ValueError):
                return str(i)

        self.service = ReasoningService(self.model, cfg.service, views=selector, label_names=label).start()
        with self._cloud_lock:
            if self._cloud is not None:
                self.service.set_scene(self._cloud, self._cloud_version)
        g = self._requests
        self._servers = [
            self.create_service(Ground, "ground", self._srv_ground, callback_group=g, qos_profile=qos.SERVICES),
            self.create_service(Ask, "ask", self._srv_ask, callback_group=g, qos_profile=qos.SERVICES),
        ]
        self._action = ActionServer(self, Reason, "reason", execute_callback=self._execute, callback_group=g,
                                    goal_service_qos_profile=qos.SERVICES, result_service_qos_profile=qos.SERVICES,
                                    cancel_service_qos_profile=qos.SERVICES,
                                    goal_callback=lambda goal: GoalResponse.ACCEPT,
                                    cancel_callback=lambda handle: CancelResponse.ACCEPT)
        self.get_logger().info(f"active: model loaded in {time.monotonic() - t0:.1f} s; serving ground, ask, reason")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # the requests first: the running batch stops at its next token and it and the queued ones
        # are answered "service shutting down" while the servers can still send the replies
        service, self.service = self.service, None        # a request from now on: "not active"
        if service is not None:
            service.stop()
        # until no request has been in flight for 0.5 s: requests still waiting in the (keep-all)
        # service queues are taken and answered "not active" meanwhile
        now = time.monotonic()
        deadline, quiet_since = now + 5.0, now
        while now < deadline and now - quiet_since < 0.5:
            if self._in_flight:
                quiet_since = now
            time.sleep(0.02)
            now = time.monotonic()
        time.sleep(0.2)                   # the executor sends a reply after its callback returns
        for srv in self._servers:
            self.destroy_service(srv)
        self._servers = []
        if getattr(self, "_action", None) is not None:
            self._action.destroy()
            self._action = None
        self.model = None                 # frees the weights (llama_ros: deactivate unloads)
        if self.cfg.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()
        self.get_logger().info("deactivated: model unloaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        if self.marker_pub is not None:
            self.destroy_lifecycle_publisher(self.marker_pub)
            self.marker_pub = None
        self.bank = None
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.service is not None:
            self.on_deactivate(state)
        return SUCCESS

    def _on_config(self, cfg: ReasonerNodeConfig) -> None:
        self.cfg = cfg
        if self.service is not None:          # the run-time service settings (the queue size is fixed)
            self.service.cfg = cfg.service

    # ---- inputs ---------------------------------------------------------------------------------
    def _on_cloud(self, msg) -> None:
        if msg.header.frame_id.lstrip("/") != self.cfg.map_frame:
            self.ignored.drop("cloud_frame", f"fused_cloud in frame {msg.header.frame_id!r}, expected "
                                             f"{self.cfg.map_frame!r}: ignored")
            return
        try:
            cloud = pointcloud2_to_cloud(msg)
        except BadInput as e:
            self.ignored.drop(e.reason, str(e))
            return
        with self._cloud_lock:
            self._cloud_version += 1
            self._cloud, self._cloud_header = cloud, msg.header
            if self.service is not None:
                self.service.set_scene(cloud, self._cloud_version)

    # ---- requests -------------------------------------------------------------------------------
    def _header(self):
        from std_msgs.msg import Header

        with self._cloud_lock:
            stamp = self._cloud_header.stamp if self._cloud_header is not None else self.get_clock().now().to_msg()
        return Header(stamp=stamp, frame_id=self.cfg.map_frame)

    def run_request(self, query, on_stage: Callable | None = None, on_text: Callable | None = None,
                    cancelled: Callable[[], bool] | None = None):
        """(SceneAnswer, "") or (None, why it failed). Never raises for a failing request."""
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            return self._run_request(query, on_stage, on_text, cancelled)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _run_request(self, query, on_stage, on_text, cancelled):
        from r1_core.service import QueueFull, RequestFailed

        svc = self.service
        if svc is None:
            return None, "scene_reasoner is not active (lifecycle state: inactive)"
        timeout = svc.cfg.request_timeout_s
        try:
            handle = svc.submit(query, on_stage=on_stage, on_text=on_text, timeout_s=timeout)
        except QueueFull as e:
            return None, str(e)
        except RequestFailed as e:
            return None, str(e)
        deadline = time.monotonic() + timeout + 10.0   # the service enforces the timeout; this is a backstop
        while True:
            try:
                return handle.result(timeout=0.02), ""
            except TimeoutError:                        # still running
                pass
            except RequestFailed as e:
                return None, str(e)
            if cancelled is not None and cancelled():
                handle.cancel()
            if time.monotonic() > deadline:
                handle.cancel()
                return None, f"no answer within {timeout + 10.0:.0f} s"

    def _publish_markers(self, answer) -> None:
        """The answer's boxes; an answer without one clears the last answer's (DELETEALL alone)."""
        if self.marker_pub is not None:
            self.marker_pub.publish(boxes_to_markers(answer.boxes, answer.labels, self._header(),
                                                     lifetime_s=self.cfg.marker_lifetime_s))

    def _fill(self, res, answer, error: str):
        res.success = answer is not None
        if answer is None:
            res.message = error
            return res
        res.message = ""
        res.answer, res.reasoning = answer.answer, answer.reasoning
        res.boxes = boxes_to_msgs(answer.boxes, answer.labels, self._header())
        self._publish_markers(answer)
        return res

    def _query(self, **kw):
        from r1_core.query import SceneQuery

        return SceneQuery(**kw)

    def _srv_ground(self, req, res):
        try:
            q = self._query(task="grounding", text=req.expression, num_views=req.num_views or None)
        except ValueError as e:
            res.success, res.message = False, f"bad request: {e}"
            return res
        return self._fill(res, *self.run_request(q))

    def _srv_ask(self, req, res):
        task = "dialogue" if len(req.history) else "qa"
        try:
            q = self._query(task=task, text=req.question, history=list(req.history), num_views=req.num_views or None)
        except ValueError as e:
            res.success, res.message = False, f"bad request: {e}"
            return res
        return self._fill(res, *self.run_request(q))

    def _execute(self, goal_handle):
        from r1_msgs.action import Reason

        g = goal_handle.request
        try:
            q = self._query(task=g.task, text=g.text, history=list(g.history),
                            target_box=msg_to_box(g.target) if g.has_target else None,
                            num_views=g.num_views or None, max_new_tokens=g.max_new_tokens or None)
        except ValueError as e:
            goal_handle.abort()
            return Reason.Result(success=False, message=f"bad goal: {e}")
        fb = _FeedbackStream(goal_handle, Reason.Feedback, self.cfg.feedback_rate_hz)
        answer, error = self.run_request(q, fb.stage, fb.text, cancelled=lambda: goal_handle.is_cancel_requested)
        fb.flush()
        if goal_handle.is_cancel_requested:
            goal_handle.canceled()
            return Reason.Result(success=False, message="canceled")
        if answer is None:
            goal_handle.abort()
            return Reason.Result(success=False, message=error)
        self._publish_markers(answer)
        goal_handle.succeed()
        return Reason.Result(success=True, message="", answer=answer.answer, reasoning=answer.reasoning,
                             boxes=boxes_to_msgs(answer.boxes, answer.labels, self._header()), steps=answer.steps)


class _FeedbackStream:
    """Reason feedback: a message per stage change, generated text coalesced into deltas sent
    at most `rate_hz` times a second (the concatenated deltas are exactly the generated text)."""

    def __init__(self, goal_handle, feedback_type, rate_hz: float):
        self.handle, self.type, self.period = goal_handle, feedback_type, 1.0 / rate_hz
        self.current, self.tokens, self.pending, self.last = "", 0, [], 0.0
        self.lock = threading.Lock()

    def _publish(self, delta: str) -> None:
        self.handle.publish_feedback(self.type(stage=self.current, text_delta=delta, tokens_generated=self.tokens))

    def flush(self) -> None:
        with self.lock:
            if self.pending:
                self._publish("".join(self.pending))
                self.pending.clear()
            self.last = time.monotonic()

    def stage(self, stage: str) -> None:
        self.flush()
        with self.lock:
            self.current = stage
            self._publish("")

    def text(self, delta: str) -> None:
        with self.lock:
            self.tokens += 1
            self.pending.append(delta)
            due = time.monotonic() - self.last >= self.period
        if due:
            self.flush()


def main(args: list[str] | None = None) -> int:
    return run_node(SceneReasonerNode, args, threads=8)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
