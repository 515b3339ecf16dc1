"""r1_core.service.ReasoningService in-process (no ROS): scene handling, answers with boxes,
queue limits and cancellation, on the scripted tiny checkpoint of r1_ros.testing."""
from __future__ import annotations

import numpy as np
import pytest

from r1_core.query import SceneQuery
from r1_core.service import QueueFull, ReasoningService, RequestFailed, ServiceConfig
from r1_ros.testing import GROUND_TEXT, _views, scripted_checkpoint


class FixedViews:
    """A view provider with the kind of views the scripted checkpoint was trained with."""

    def select_views(self, query, scene, k):
        return _views(1, k)


@pytest.fixture(scope="module")
def model():
    import torch

    from r1_core.data.synthetic.demo import demo_scene
    from r1_core.model.checkpoint import load_checkpoint

    torch.set_num_threads(1)
    m, _ = load_checkpoint(scripted_checkpoint(num_views=2))
    return m, demo_scene()


def _service(model, **cfg) -> ReasoningService:
    m, _ = model
    return ReasoningService(m, ServiceConfig(num_views=2, max_new_tokens=64, **cfg), views=FixedViews()).start()


def test_no_scene_and_empty_scene_fail_clearly_and_the_service_keeps_serving(model):
    m, scene = model
    svc = _service(model)
    try:
        with pytest.raises(RequestFailed, match="no scene yet: the fusion map has not published"):
            svc.ask(SceneQuery("grounding", GROUND_TEXT))
        svc.set_scene(np.zeros((0, 6), np.float32), version=1)
        with pytest.raises(RequestFailed, match="fused cloud is empty"):
            svc.ask(SceneQuery("grounding", GROUND_TEXT))
        with pytest.raises(ValueError, match=r"expected \(N, 6\) or \(N, 9\)"):
            svc.set_scene(np.zeros((10, 4), np.float32), version=2)
        svc.set_scene(scene.points, version=3)
        ans = svc.ask(SceneQuery("grounding", GROUND_TEXT))
        assert ans.reasoning == "red chair" and len(ans.boxes) == 1      # the scripted <ref>3</ref>
        assert svc.stats["failed"] == 2 and svc.stats["served"] >= 1
    finally:
        svc.stop()


def test_full_queue_rejects_at_once_and_cancel_ends_a_request(model):
    _, scene = model
    svc = ReasoningService(model[0], ServiceConfig(num_views=2, max_new_tokens=64, max_queue=1, max_batch=1),
                           views=FixedViews())
    svc.set_scene(scene.points, version=1)
    # the worker is not started: the first request waits in the queue, the second finds it full
    first = svc.submit(SceneQuery("grounding", GROUND_TEXT))
    with pytest.raises(QueueFull, match="request queue full"):
        svc.submit(SceneQuery("grounding", GROUND_TEXT))
    assert svc.stats["rejected"] == 1
    first.cancel()
    svc.start()
    try:
        with pytest.raises(RequestFailed, match="cancel"):
            first.result(timeout=60)
        assert len(svc.ask(SceneQuery("grounding", GROUND_TEXT)).boxes) == 1     # still serving
    finally:
        svc.stop()


def test_a_request_too_long_for_the_model_fails_alone_not_its_batch(model):
    _, scene = model
    svc = ReasoningService(model[0], ServiceConfig(num_views=2, max_new_tokens=64, max_batch=4), views=FixedViews())
    svc.set_scene(scene.points, version=1)
    # queued before the worker starts, so the three are served as one batch
    handles = [svc.submit(SceneQuery("grounding", text)) for text in (GROUND_TEXT, "where " * 600, GROUND_TEXT)]
    svc.start()
    try:
        with pytest.raises(RequestFailed, match=r"bad request: sample of \d+ tokens exceeds max_length"):
            handles[1].result(timeout=60)
        for h in (handles[0], handles[2]):
            assert len(h.result(timeout=60).boxes) == 1
        assert svc.stats["failed"] == 1 and svc.stats["served"] == 2
    finally:
        svc.stop()
