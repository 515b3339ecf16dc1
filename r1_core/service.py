"""The reasoning engine the `scene_reasoner` node wraps: a bounded request queue, a worker
that batches compatible requests, scene-encoding cache, view selection, generation with
streaming and cancellation, answer parsing.

    svc = ReasoningService(model, ServiceConfig(), views=selector)
    svc.set_scene(cloud, version=1)
    handle = svc.submit(SceneQuery("grounding", "the red chair next to the bed"),
                        on_stage=print, on_text=print)
    answer = handle.result(timeout=30)          # SceneAnswer, or raises RequestFailed

A full queue rejects at once (QueueFull); a request that waits or runs past its timeout fails
with a message saying so; a request whose model output is malformed fails with the parser's
message and the raw text. A failing request never stops the worker.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np
import torch

from r1_core.model.answer import AnswerFormatError, parse_response, resolve_refs
from r1_core.model.generate import GenerationSettings, generate
from r1_core.model.r1model import R1Model, SceneEncoding
from r1_core.model.views_encoder import ViewInput
from r1_core.query import SceneAnswer, SceneQuery

STAGE_SELECTING_VIEWS = "selecting_views"
STAGE_ENCODING_SCENE = "encoding_scene"
STAGE_GENERATING = "generating"


class RequestFailed(RuntimeError):
    """A request could not be answered; the message says why (and holds the raw output)."""

    def __init__(self, message: str, raw: str = ""):
        super().__init__(message)
        self.raw = raw


class QueueFull(RequestFailed):
    pass


class ViewProvider(Protocol):
    """Chooses the views for a request (r1_core.views implements it)."""

    def select_views(self, query: SceneQuery, scene: SceneEncoding, k: int) -> list[ViewInput]: ...


@dataclass
class ServiceConfig:
    max_queue: int = 8               # requests waiting; more are rejected at once
    max_batch: int = 4               # requests decoded together
    batch_wait_s: float = 0.02       # how long the worker waits to fill a batch
    request_timeout_s: float = 120.0 # from submission to answer
    num_views: int = 4               # default views per request
    max_new_tokens: int = 192
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    lm_weights: str = "float"        # float | int8: weight-only int8 language model (CPU only; 2.2x on 2 cores)

    def __post_init__(self):
        if self.lm_weights not in ("float", "int8"):
            raise ValueError(f"lm_weights: expected 'float' or 'int8', got {self.lm_weights!r}")
        for name in ("max_queue", "max_batch", "max_new_tokens"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")


@dataclass
class RequestHandle:
    query: SceneQuery
    on_stage: Callable[[str], None] | None = None
    on_text: Callable[[str], None] | None = None
    submitted: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    _done: threading.Event = field(default_factory=threading.Event)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _answer: SceneAnswer | None = None
    _error: RequestFailed | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self, timeout: float | None = None) -> SceneAnswer:
        if not self._done.wait(timeout):
            raise TimeoutError("request still running")
        if self._error is not None:
            raise self._error
        return self._answer

    def _finish(self, answer: SceneAnswer | None = None, error: RequestFailed | None = None) -> None:
        self._answer, self._error = answer, error
        self._done.set()

    def _stage(self, stage: str) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)


_STEP_RE = re.compile(r"(?:^|\s)(\d+)[.)]\s+(.+?)(?=(?:\s\d+[.)]\s)|$)", re.S)


def planning_steps(answer: str) -> list[str]:
    """'1. go to the bed [0] 2. pick up the pillow' -> ['go to the bed [0]', 'pick up the pillow'].

    The answer comes from `ParsedResponse.answer_indexed`: `[k]` in a step is the answer's k-th box."""
    steps = [m.group(2).strip().rstrip(";,") for m in _STEP_RE.finditer(answer.strip())]
    return [s for s in steps if s]


class ReasoningService:
    def __init__(self, model: R1Model, cfg: ServiceConfig | None = None, views: ViewProvider | None = None,
                 label_names: Callable[[int], str] | None = None):
        self.cfg = cfg or ServiceConfig()
        self.model = model.eval().merge_lora()     # inference only: fold LoRA into the weights
        if self.cfg.lm_weights == "int8":
            self.model.quantize_int8()
        self.views = views
        self.label_names = label_names or (lambda i: str(i))
        self._queue: queue.Queue[RequestHandle] = queue.Queue(maxsize=self.cfg.max_queue)
        self._scene_lock = threading.Lock()
        self._cloud: np.ndarray | None = None
        self._version: int | None = None
        self._encoding: SceneEncoding | None = None
        self._encoded_version: int | None = None
        self._stop = threading.Event()
        self._submit_lock = threading.Lock()   # a request is queued before stop() or refused after it
        self._worker = threading.Thread(target=self._run, name="r1-reasoner", daemon=True)
        self.stats = {"served": 0, "failed": 0, "rejected": 0, "cancelled": 0, "timed_out": 0}

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> "ReasoningService":
        self._worker.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker: the running batch stops at its next token and, like the queued
        requests, fails with 'service shutting down'."""
        with self._submit_lock:
            self._stop.set()
        self._worker.join(timeout)
        while True:
            try:
                h = self._queue.get_nowait()
            except queue.Empty:
                break
            h._finish(error=RequestFailed("service shutting down"))

    # ---- scene --------------------------------------------------------------------------
    def set_scene(self, cloud: np.ndarray, version: int) -> None:
        """Hand in the current fused cloud (N, 6|9); it is encoded lazily, once per version."""
        cloud = np.asarray(cloud)
        if cloud.ndim != 2 or cloud.shape[1] not in (6, 9):
            raise ValueError(f"scene cloud: expected (N, 6) or (N, 9), got {cloud.shape}")
        with self._scene_lock:
            self._cloud, self._version = cloud, version

    @property
    def scene_version(self) -> int | None:
        return self._version

    def scene_encoding(self) -> SceneEncoding:
        with self._scene_lock:
            cloud, version = self._cloud, self._version
            if cloud is None:
                raise RequestFailed("no scene yet: the fusion map has not published a cloud")
            if len(cloud) == 0:
                raise RequestFailed("no scene yet: the fused cloud is empty (no frame fused so far)")
            if self._encoded_version == version and self._encoding is not None:
                return self._encoding
        try:
            enc = self.model.encode_scene(cloud)
        except ValueError as e:
            raise RequestFailed(f"cannot encode the scene: {e}") from e
        with self._scene_lock:
            self._encoding, self._encoded_version = enc, version
        return enc

    # ---- requests -----------------------------------------------------------------------
    def submit(self, query: SceneQuery, on_stage: Callable[[str], None] | None = None,
               on_text: Callable[[str], None] | None = None, timeout_s: float | None = None) -> RequestHandle:
        h = RequestHandle(query, on_stage, on_text)
        h.deadline = h.submitted + (timeout_s or self.cfg.request_timeout_s)
        with self._submit_lock:       # else a request queued after stop() drained the queue waits forever
            if self._stop.is_set():
                raise RequestFailed("service shutting down")
            try:
                self._queue.put_nowait(h)
            except queue.Full:
                self.stats["rejected"] += 1
                raise QueueFull(f"request queue full ({self.cfg.max_queue} waiting); try again later") from None
        return h

    def ask(self, query: SceneQuery, timeout_s: float | None = None, **callbacks) -> SceneAnswer:
        """Submit and wait: the synchronous form."""
        h = self.submit(query, timeout_s=timeout_s, **callbacks)
        return h.result(timeout=None)

    def _take_batch(self) -> list[RequestHandle]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        end = time.monotonic() + self.cfg.batch_wait_s
        while len(batch) < self.cfg.max_batch:
            left = end - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._take_batch()
            live = []
            now = time.monotonic()
            for h in batch:
                if h.cancelled:
                    self.stats["cancelled"] += 1
                    h._finish(error=RequestFailed("cancelled before it started"))
                elif now > h.deadline:
                    self.stats["timed_out"] += 1
                    h._finish(error=RequestFailed(f"timed out after {now - h.submitted:.1f} s waiting in the queue"))
                else:
                    live.append(h)
            if not live:
                continue
            try:
                self._serve(live)
            except Exception as e:  # noqa: BLE001 - the worker must outlive any single failure
                for h in live:
                    if not h.done():
                        self.stats["failed"] += 1
                        h._finish(error=RequestFailed(f"internal error: {type(e).__name__}: {e}"))

    def _serve(self, handles: list[RequestHandle]) -> None:
        t0 = time.monotonic()
        for h in handles:
            h._stage(STAGE_ENCODING_SCENE)
        try:
            scene = self.scene_encoding()
        except RequestFailed as e:
            for h in handles:
                self.stats["failed"] += 1
                h._finish(error=e)
            return
        t_enc = time.monotonic()
        samples, views_used, batched = [], [], []
        for h in handles:
            h._stage(STAGE_SELECTING_VIEWS)
            k = self.cfg.num_views if h.query.num_views is None else h.query.num_views
            views = self.views.select_views(h.query, scene, k) if (self.views is not None and k > 0) else []
            try:
                sample = self.model.prepare(scene, views, h.query)
            except ValueError as e:         # this request (e.g. too long for the model): it fails, not its batch
                self.stats["failed"] += 1
                h._finish(error=RequestFailed(f"bad request: {e}"))
                continue
            samples.append(sample)
            views_used.append([v.keyframe_id for v in views])
            batched.append(h)
        handles = batched
        if not handles:
            return
        t_views = time.monotonic()
        for h in handles:
            h._stage(STAGE_GENERATING)
        with torch.no_grad():
            batch = self.model.collate(samples, for_generation=True)
        max_new = max(h.query.max_new_tokens or self.cfg.max_new_tokens for h in handles)
        settings = GenerationSettings(max_new_tokens=max_new, do_sample=self.cfg.do_sample,
                                      temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        cancel = [self._cancel_fn(h) for h in handles]
        results = generate(self.model, batch, settings, on_text=[h.on_text for h in handles], cancel=cancel)
        t_gen = time.monotonic()
        for h, res, vids in zip(handles, results, views_used):
            timings = {"encode_s": t_enc - t0, "views_s": t_views - t_enc, "generate_s": t_gen - t_views,
                       "total_s": t_gen - h.submitted, "new_tokens": float(len(res.token_ids))}
            if res.finish_reason == "cancelled":
                timed_out = time.monotonic() > h.deadline and not h.cancelled
                key = "timed_out" if timed_out else "cancelled"
                self.stats[key] += 1
                msg = (f"timed out after {time.monotonic() - h.submitted:.1f} s" if timed_out else
                       "cancelled" if h.cancelled else "service shutting down")
                h._finish(error=RequestFailed(msg, raw=res.text))
                continue
            try:
                h._finish(self._to_answer(res.text, scene, vids, timings))
                self.stats["served"] += 1
            except AnswerFormatError as e:
                self.stats["failed"] += 1
                h._finish(error=RequestFailed(f"model output malformed: {e}", raw=res.text))

    def _cancel_fn(self, h: RequestHandle) -> Callable[[], bool]:
        return lambda: h.cancelled or time.monotonic() > h.deadline or self._stop.is_set()

    def _to_answer(self, raw: str, scene: SceneEncoding, view_ids: list[int], timings: dict) -> SceneAnswer:
        resolved = resolve_refs(raw, scene.boxes)
        parsed = parse_response(resolved)
        labels = []
        for ref in re.findall(r"<ref>\s*(\d+)\s*</ref>", raw.split("<answer>")[-1]):
            labels.append(self.label_names(int(scene.labels[int(ref)])))
        if len(labels) != len(parsed.boxes):
            labels = [""] * len(parsed.boxes)
        return SceneAnswer(answer=parsed.answer, reasoning=parsed.reasoning, boxes=parsed.boxes, labels=labels,
                           steps=planning_steps(parsed.answer_indexed), raw=raw, view_ids=view_ids, timings=timings)
