"""Dynamic view selection over the keyframe bank, and the uniform / random baselines.

    bank = KeyframeBank(BankConfig())
    sel = make_selector(bank, load_config(SelectorConfig, "config/views.yaml", section="selector"))
    views = sel.select_views(SceneQuery("grounding", "the red chair next to the bed"), scene, k=4)

Every selector implements r1_core.service.ViewProvider: `select_views(query, scene, k) ->
list[ViewInput]` (k = 0 -> []; fewer than k keyframes -> all of them; an empty bank -> []).

Dynamic selection scores every keyframe i with a linear utility in the form of the paper's
U(v) = w_t S_text + w_c S_coverage + w_clip S_CLIP (learnable weights), extended by a
request-region term and a redundancy penalty, and picks k views greedily under redundancy
(the paper takes the top k by U):

    U_i(S) = w_text * text_i + w_clip * clip_i + w_coverage * coverage_i + w_region * region_i
             - w_redundancy * max_{j in S} |V_i ∩ V_j| / |V_i|

  text_i      relevance of the view to the request from the scene understanding: the weighted
              fraction of the request's target objects the view sees (relevance.ProposalRelevance)
  clip_i      image-text similarity from a local CLIP/SigLIP (relevance.ClipRelevance), 0 when
              that encoder is not configured
  coverage_i  |V_i| / max_j |V_j|: how much of the scene the view sees (V_i = its map voxels)
  region_i    how much of the request-relevant region the view sees, normalised by the best
              view; the region = the map voxels (any height) in the 0.5 m grid cells within
              region_margin_m of the target boxes' footprints (BankSnapshot.cells_near)
  redundancy  overlap with the views already chosen (S), recomputed after every pick

The pick is argmax U_i(S) over unchosen views; ties go to the older keyframe, so selection is
deterministic. Weights: config `selector.weights`, or a fitted file (`weights_file`, written by
`r1 views fit`, tensors `view_selection.w_<term>`; the same keys in a model checkpoint's
extra.safetensors).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from r1_core.model.views_encoder import ViewInput
from r1_core.views.bank import BankSnapshot, Keyframe, KeyframeBank
from r1_core.views.relevance import ClipRelevance, ProposalRelevance, RelevanceEncoder, Targets, resolve_targets

if TYPE_CHECKING:
    from r1_core.model.r1model import SceneEncoding
    from r1_core.query import SceneQuery

log = logging.getLogger(__name__)

METHODS = ("dynamic", "uniform", "random")
RELEVANCE_ENCODERS = ("proposals", "clip")
FEATURES = ("text", "clip", "coverage", "region")
WEIGHT_NAMES = FEATURES + ("redundancy",)
WEIGHTS_PREFIX = "view_selection."
WEIGHTS_FORMAT = 1


@dataclass
class WeightsConfig:
    """Initial / fixed utility weights (all >= 0; see the module docstring)."""

    text: float = 1.0
    clip: float = 0.0
    coverage: float = 0.2
    region: float = 0.2
    redundancy: float = 0.3

    def __post_init__(self) -> None:
        for n in WEIGHT_NAMES:
            if not getattr(self, n) >= 0:
                raise ValueError(f"selector.weights.{n} must be >= 0, got {getattr(self, n)}")


@dataclass
class SelectorConfig:
    """View selection settings (config/views.yaml, section `selector`)."""

    method: str = "dynamic"                      # dynamic | uniform | random
    seed: int = 0                                # random baseline
    relevance: tuple[str, ...] = ("proposals",)  # relevance encoders: proposals, clip
    clip_model_dir: str | None = None            # local CLIP/SigLIP dir (relevance "clip")
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    weights_file: str | None = None              # fitted weights (safetensors, view_selection.* keys)
    context_weight: float = 0.5                  # weight of non-head object phrases
    history_weight: float = 0.5                  # extra factor for phrases from dialogue history
    color_floor: float = 0.05                    # colour re-weighting: floor + fraction of matching voxels
    relation_scale_m: float = 0.5                # near/far relation re-weighting length scale
    min_proposal_score: float = 0.0              # proposals below this are ignored
    max_targets: int = 8                         # strongest target boxes kept per request
    max_points_per_target: int = 64              # points projected per target
    min_points_per_target: int = 4               # fewer observed voxels: use the box surface grid
    occlusion_tol_m: float = 0.1                 # depth tolerance of the visibility test
    min_depth_m: float = 0.1                     # points nearer the camera than this count as not visible (m)
    region_margin_m: float = 0.75                # request region: grid cells within this of the targets

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown selector method {self.method!r}; choose one of {list(METHODS)}")
        bad = [r for r in self.relevance if r not in RELEVANCE_ENCODERS]
        if bad:
            raise ValueError(f"unknown relevance encoder(s) {bad}; choose from {list(RELEVANCE_ENCODERS)}")
        if "clip" in self.relevance and not self.clip_model_dir:
            raise ValueError("selector.relevance includes 'clip' but selector.clip_model_dir is not set")
        if self.max_targets <= 0 or self.max_points_per_target <= 0:
            raise ValueError(f"selector.max_targets and max_points_per_target must be > 0, "
                             f"got {self.max_targets}, {self.max_points_per_target}")


# ---- weights ----------------------------------------------------------------------------------------
class ViewScorerWeights(nn.Module):
    """The learnable utility weights, w = exp(log_w) >= 0, one per term of WEIGHT_NAMES (a
    configured 0 is held as 1e-6: it can still break exact ties).

    Saved as a tensor dict: `view_selection.w_text`, `…w_clip`, `…w_coverage`, `…w_region`,
    `…w_redundancy` (float32 scalars) and `view_selection.format` (int64 scalar, 1).
    """

    def __init__(self, cfg: WeightsConfig | None = None):
        super().__init__()
        cfg = cfg or WeightsConfig()
        w = torch.tensor([getattr(cfg, n) for n in WEIGHT_NAMES], dtype=torch.float64)
        self.log_w = nn.Parameter(torch.log(w.clamp_min(1e-6)))

    def weights(self) -> torch.Tensor:
        return self.log_w.exp()

    def as_dict(self) -> dict[str, float]:
        return {n: float(v) for n, v in zip(WEIGHT_NAMES, self.weights().detach())}

    def to_tensors(self) -> dict[str, torch.Tensor]:
        w = self.weights().detach().to(torch.float32)
        out = {f"{WEIGHTS_PREFIX}w_{n}": w[i].clone() for i, n in enumerate(WEIGHT_NAMES)}
        out[f"{WEIGHTS_PREFIX}format"] = torch.tensor(WEIGHTS_FORMAT, dtype=torch.int64)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str = "tensors") -> "ViewScorerWeights":
        """Read the `view_selection.*` keys (other keys are ignored: a checkpoint's extra file
        may hold more); missing or unexpected view_selection keys raise ValueError."""
        mine = {k: v for k, v in tensors.items() if k.startswith(WEIGHTS_PREFIX)}
        want = {f"{WEIGHTS_PREFIX}w_{n}" for n in WEIGHT_NAMES} | {f"{WEIGHTS_PREFIX}format"}
        if set(mine) != want:
            raise ValueError(f"{source}: view-selection weights need keys {sorted(want)}; missing "
                             f"{sorted(want - set(mine))}, unexpected {sorted(set(mine) - want)}")
        fmt = int(mine[f"{WEIGHTS_PREFIX}format"])
        if fmt != WEIGHTS_FORMAT:
            raise ValueError(f"{source}: view_selection.format is {fmt}, this code reads {WEIGHTS_FORMAT}")
        vals = {}
        for n in WEIGHT_NAMES:
            t = mine[f"{WEIGHTS_PREFIX}w_{n}"]
            if t.numel() != 1 or not bool(torch.isfinite(t).all()) or float(t) < 0:
                raise ValueError(f"{source}: view_selection.w_{n} must be one finite number >= 0, got {t.tolist()}")
            vals[n] = float(t)
        return cls(WeightsConfig(**vals))

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.to_tensors().items()}, str(path))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ViewScorerWeights":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"view-selection weights file not found: {path}")
        return cls.from_tensors(load_file(str(path)), source=str(path))


# ---- scores -----------------------------------------------------------------------------------------
@dataclass
class ViewScores:
    """Per-request terms of every keyframe of a snapshot."""

    snap: BankSnapshot
    targets: Targets
    features: np.ndarray          # (N, len(FEATURES))
    redundancy: np.ndarray        # (N, N): |V_i ∩ V_j| / |V_i|

    def utility(self, w: np.ndarray) -> np.ndarray:
        return self.features @ w[: len(FEATURES)]


def redundancy_matrix(snap: BankSnapshot) -> np.ndarray:
    """(N, N) |V_i ∩ V_j| / |V_i| (cached on the snapshot)."""
    r = snap._cache.get("redundancy")
    if r is None:
        r = snap.overlap / np.maximum(snap.sizes, 1)[:, None].astype(np.float64)
        snap._cache["redundancy"] = r
    return r


def greedy_select(base: np.ndarray, redundancy: np.ndarray, w_red: float, k: int) -> list[int]:
    """Greedy top-k of base - w_red * max-overlap with the chosen; ties to the lowest index."""
    N = base.shape[0]
    chosen: list[int] = []
    red = np.zeros(N)
    avail = np.ones(N, bool)
    for _ in range(min(k, N)):
        u = np.where(avail, base - w_red * red, -np.inf)
        i = int(np.argmax(u))
        chosen.append(i)
        avail[i] = False
        red = np.maximum(red, redundancy[:, i])
    return chosen


def _to_view(kf: Keyframe) -> ViewInput:
    return ViewInput(color=kf.color, T_map_optical=kf.T_map_optical, depth=kf.depth_m, keyframe_id=kf.keyframe_id)


class _Selector:
    """Common ViewProvider plumbing; `bank` may be None when callers always pass a snapshot."""

    def __init__(self, bank: KeyframeBank | None):
        self.bank = bank

    def select_indices(self, query: "SceneQuery", scene: "SceneEncoding", k: int,
                       snap: BankSnapshot | None = None) -> list[int]:
        raise NotImplementedError

    def select_views(self, query: "SceneQuery", scene: "SceneEncoding", k: int) -> list[ViewInput]:
        """The ViewProvider entry point: up to k keyframes as model view inputs."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        if k == 0:
            return []
        snap = self.bank.snapshot()
        if len(snap) == 0:
            log.warning("view selection: the keyframe bank is empty; the request gets no views")
            return []
        return [_to_view(snap.keyframes[i]) for i in self.select_indices(query, scene, k, snap)]


class DynamicSelector(_Selector):
    """Request-aware greedy selection (module docstring)."""

    def __init__(self, bank: KeyframeBank, cfg: SelectorConfig | None = None,
                 weights: ViewScorerWeights | None = None, encoders: list[RelevanceEncoder] | None = None):
        super().__init__(bank)
        self.cfg = cfg or SelectorConfig()
        if weights is None:
            weights = ViewScorerWeights.load(self.cfg.weights_file) if self.cfg.weights_file \
                else ViewScorerWeights(self.cfg.weights)
        self.weights = weights
        if encoders is None:
            encoders = [ProposalRelevance(self.cfg) if name == "proposals" else ClipRelevance(self.cfg.clip_model_dir)
                        for name in self.cfg.relevance]
        self.encoders = {e.name: e for e in encoders}

    def scores(self, query: "SceneQuery", scene: "SceneEncoding", snap: BankSnapshot | None = None) -> ViewScores:
        snap = snap if snap is not None else self.bank.snapshot()
        N = len(snap)
        targets = resolve_targets(query, scene, snap, self.cfg)
        feats = np.zeros((N, len(FEATURES)))
        if "proposals" in self.encoders:
            feats[:, 0] = self.encoders["proposals"].relevance(query, targets, snap)
        if "clip" in self.encoders:
            feats[:, 1] = self.encoders["clip"].relevance(query, targets, snap)
        if N:
            feats[:, 2] = snap.sizes / max(int(snap.sizes.max()), 1)
            if len(targets):
                cells = snap.cells_near(targets.boxes, self.cfg.region_margin_m)
                if cells.size:
                    cnt = snap.counts_in_cells(cells).astype(np.float64)
                    feats[:, 3] = cnt / max(cnt.max(), 1.0)
        return ViewScores(snap, targets, feats, redundancy_matrix(snap))

    def select_indices(self, query: "SceneQuery", scene: "SceneEncoding", k: int,
                       snap: BankSnapshot | None = None) -> list[int]:
        s = self.scores(query, scene, snap)
        w = self._weights_np()
        return greedy_select(s.utility(w), s.redundancy, float(w[-1]), k)

    def _weights_np(self) -> np.ndarray:
        """The weights as numpy, recomputed only when the parameters changed (fitting)."""
        key = (id(self.weights), self.weights.log_w._version)
        if getattr(self, "_wkey", None) != key:
            with torch.no_grad():
                self._wnp = self.weights.weights().double().numpy().copy()
            self._wkey = key
        return self._wnp


class UniformSelector(_Selector):
    """Baseline: k keyframes evenly spaced in time over the bank."""

    def select_indices(self, query, scene, k, snap=None) -> list[int]:
        snap = snap if snap is not None else self.bank.snapshot()
        N = len(snap)
        if N == 0 or k == 0:
            return []
        order = np.argsort(snap.stamps, kind="stable")
        if k >= N:
            return [int(i) for i in order]
        pos = np.floor((np.arange(k) + 0.5) * N / k).astype(np.int64)   # centres of k equal slices
        return [int(order[p]) for p in pos]


class RandomSelector(_Selector):
    """Baseline: k keyframes uniformly at random (numpy Generator seeded once; reproducible
    for the same sequence of calls)."""

    def __init__(self, bank: KeyframeBank, seed: int = 0):
        super().__init__(bank)
        self.rng = np.random.default_rng(seed)

    def select_indices(self, query, scene, k, snap=None) -> list[int]:
        snap = snap if snap is not None else self.bank.snapshot()
        N = len(snap)
        if N == 0 or k == 0:
            return []
        return [int(i) for i in self.rng.choice(N, size=min(k, N), replace=False)]


def make_selector(bank: KeyframeBank, cfg: SelectorConfig | None = None, **kwargs) -> _Selector:
    """The selector `cfg.method` names, over `bank`."""
    cfg = cfg or SelectorConfig()
    if cfg.method == "dynamic":
        return DynamicSelector(bank, cfg, **kwargs)
    if cfg.method == "uniform":
        return UniformSelector(bank)
    if cfg.method == "random":
        return RandomSelector(bank, cfg.seed)
    raise ValueError(f"unknown selector method {cfg.method!r}; choose one of {list(METHODS)}")
