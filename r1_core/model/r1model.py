"""R1Model: point encoder + projector + view tokens + backbone LLM (LoRA), in the 3D-R1 recipe.

    model = R1Model(ModelConfig(backbone="tiny"))
    scene = model.encode_scene(cloud)                         # cache per map version
    batch = model.collate([model.prepare(scene, views, query, target=None)], for_generation=True)
    texts = generate(model, batch, GenerationSettings())      # r1_core.model.generate

`prepare` lays out one prompt (prompts.py) and records where scene/view embeddings go;
`collate` pads a list of prepared samples (right-padded for training, left-padded for
generation) and fills the embedding slots; `loss`/`token_logprobs` compute the LM loss on the
response tokens only.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from r1_core.model.backbones import IMAGE_PAD, VISION_END, VISION_START, Backbone, load_backbone
from r1_core.model.encoder import EncoderConfig, EncoderOutput, PointEncoder, mlp
from r1_core.model.prompts import SYSTEM_PROMPT, PromptPiece, build_prompt
from r1_core.model.views_encoder import ConvViewEncoder, PoseEmbedding, ViewEncoderConfig, ViewInput
from r1_core.query import SceneQuery
from r1_core.views.vocab import COLOR_WORDS, dominant_colors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LORA_TARGETS = (r"(model\.)?(language_model\.)?layers\.\d+\.(self_attn|mlp)\."
                r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")


@dataclass
class LoraSettings:
    rank: int = 16                   # 0 disables LoRA (backbone frozen, encoder/projector train)
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: str = LORA_TARGETS   # regex over the language model's linear layers


@dataclass
class DepthSettings:
    model_path: str | None = None    # local Depth Anything (hub format) dir; None disables the branch
    tiny: bool = False               # random-init tiny Depth Anything (tests only)


OBJECT_ORDERS = ("detector", "class")


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model; saved with every checkpoint."""

    backbone: str = "smollm2-135m"   # tiny | tiny-vl | smollm2-135m | qwen2.5-vl
    backbone_path: str | None = None # local hub-format dir (qwen2.5-vl)
    dtype: str = "float32"           # float32 | bfloat16 | float16
    seed: int = 0                    # init of the random parts
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    views: ViewEncoderConfig = field(default_factory=ViewEncoderConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    depth: DepthSettings = field(default_factory=DepthSettings)
    projector_hidden: int = 1024
    label_objects: bool = True       # write each proposal's predicted class name next to its ref
    label_colors: bool = False       # ... preceded by the dominant colour of its points ("red chair")
    object_order: str = "detector"   # proposal order in the prompt: "detector" (NMS order) | "class" (grouped by class, then x, y)
    system_prompt: str = SYSTEM_PROMPT
    max_length: int = 2048           # prompt + response tokens

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {list(DTYPES)}")
        if self.object_order not in OBJECT_ORDERS:
            raise ValueError(f"object_order: expected one of {list(OBJECT_ORDERS)}, got {self.object_order!r}")
        if self.label_colors and not self.label_objects:
            raise ValueError("label_colors: colours are written before the class names, so it needs label_objects: true")


@dataclass
class SceneEncoding:
    """A scene's encoder output for one cloud (cache it while the map does not change)."""

    token_inputs: torch.Tensor       # (P, token_in_dim) detector-side proposal features (no grad)
    boxes: np.ndarray                # (P, 7) proposal boxes, map frame
    scores: np.ndarray               # (P,)
    labels: np.ndarray               # (P,) nyu40 ids
    num_points: int = 0
    colors: np.ndarray | None = None # (P,) index into COLOR_WORDS of the points' dominant colour, -1 none

    def reordered(self, order: np.ndarray) -> SceneEncoding:
        """The same proposals in another order (refs index the new order)."""
        order = np.asarray(order)
        return SceneEncoding(self.token_inputs[torch.as_tensor(order, device=self.token_inputs.device)],
                             self.boxes[order], self.scores[order], self.labels[order], self.num_points,
                             None if self.colors is None else self.colors[order])


def object_labels(scene: SceneEncoding, with_colors: bool) -> list[str]:
    """Each proposal's text next to its ref: the detector's class name ("chair"), with
    with_colors the dominant colour of its points first ("red chair")."""
    from r1_core.data.classes import NYU40_NAMES

    names = [NYU40_NAMES.get(int(i), "object") for i in scene.labels]
    if not with_colors:
        return names
    if scene.colors is None or len(scene.colors) != len(names):
        raise ValueError(f"label_colors: the scene encoding has {'no' if scene.colors is None else len(scene.colors)} "
                         f"proposal colours for {len(names)} proposals (build it with R1Model.encode_scene)")
    return [f"{COLOR_WORDS[c]} {n}" if c >= 0 else n for c, n in zip(scene.colors.tolist(), names)]


@dataclass
class PreparedSample:
    input_ids: list[int]
    labels: list[int]                            # -100 on the prompt
    slots: list[tuple[int, str, int, int]]       # (start, kind, index, length)
    scene: SceneEncoding
    view_tokens: torch.Tensor | None             # (V, T, hidden) image tokens (text-only path)
    view_images: list[torch.Tensor] = field(default_factory=list)  # VL: per-view vision embeds
    image_grid: torch.Tensor | None = None       # VL: (V, 3)
    pose_tokens: torch.Tensor | None = None      # (V, hidden)
    prompt_len: int = 0
    _projected: torch.Tensor | None = None       # scene tokens after token MLP + projector


@dataclass
class Batch:
    input_ids: torch.Tensor          # (B, L)
    attention_mask: torch.Tensor     # (B, L)
    position_ids: torch.Tensor       # (B, L) or (3, B, L) for mrope
    inputs_embeds: torch.Tensor      # (B, L, H)
    labels: torch.Tensor             # (B, L), -100 where no loss
    samples: list[PreparedSample]


class R1Model(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: Backbone | None = None):
        super().__init__()
        self.cfg = cfg
        dtype = DTYPES[cfg.dtype]
        self.backbone = backbone or load_backbone(cfg.backbone, cfg.backbone_path, dtype=dtype, seed=cfg.seed)
        for p in self.backbone.model.parameters():
            p.requires_grad_(False)
        torch.manual_seed(cfg.seed)
        H = self.backbone.hidden_size
        self.encoder = PointEncoder(cfg.encoder)
        self.projector = mlp([cfg.encoder.token_dim, cfg.projector_hidden, H], last_act=False)
        self.pose_embed = PoseEmbedding(cfg.views, H)
        self.view_encoder = None if self.backbone.has_vision else ConvViewEncoder(cfg.views, H)
        self.depth = None
        if cfg.depth.model_path or cfg.depth.tiny:
            from r1_core.model.depth import DepthBranch

            self.depth = DepthBranch(cfg.depth.model_path, tiny=cfg.depth.tiny, out_dim=H,
                                     tokens=cfg.views.tokens_per_view if self.view_encoder else 1)
        self.lm = self.backbone.model
        if cfg.lora.rank > 0:
            from peft import LoraConfig, get_peft_model

            lcfg = LoraConfig(r=cfg.lora.rank, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                              target_modules=cfg.lora.target_modules, bias="none")
            self.lm = get_peft_model(self.backbone.model, lcfg)
            n = sum(1 for name, _ in self.lm.named_modules() if name.endswith("lora_A"))
            if n == 0:
                raise ValueError(f"lora.target_modules matched no layer of backbone {cfg.backbone!r}")
        for mod in (self.encoder, self.projector, self.pose_embed, self.view_encoder):
            if mod is not None:
                mod.to(dtype=torch.float32)
        tok = self.backbone.tokenizer
        self.slot_id = tok.pad_token_id
        self.eos_id = tok.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tok.get_vocab() else tok.eos_token_id
        self._text_ids: dict[str, tuple[int, ...]] = {}     # prompt piece -> token ids (text_ids)

    # ---- helpers ----------------------------------------------------------------------
    def text_ids(self, text: str) -> tuple[int, ...]:
        """Token ids of one prompt piece, memoised: a prompt is ~40 pieces and most of them (the
        object labels "<ref>3</ref> red chair", the system prompt, the view markers) repeat from
        prompt to prompt. Measured on the 2-core CPU, 16 SFT prompts of R1-nano: 624 tokenizer
        calls become 28, and `prepare` takes 48 ms instead of 68 ms. Bounded: past 65,536 pieces,
        new ones are tokenised without being kept."""
        ids = self._text_ids.get(text)
        if ids is None:
            ids = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if len(self._text_ids) < 65_536:
                self._text_ids[text] = ids
        return ids

    @property
    def lora_merged(self) -> bool:
        return bool(getattr(self, "_lora_merged", False))

    def merge_lora(self) -> "R1Model":
        """For inference only: fold the LoRA deltas into the base weights (peft merge_adapter),
        which removes two extra matmuls per adapted layer from every decode step (about 1.5x
        faster on CPU). Saving refuses a merged model; `unmerge_lora` restores it exactly."""
        if self.cfg.lora.rank > 0 and not self.lora_merged:
            self.lm.merge_adapter()
            self._lora_merged = True
        return self

    @property
    def int8_weights(self) -> bool:
        return bool(getattr(self, "_int8_weights", False))

    def quantize_int8(self) -> "R1Model":
        """For CPU inference only, one way: merge LoRA, then store the language model's linear
        layers and LM head as weight-only int8 (r1_core.model.quantize; decode reads 4x fewer
        bytes). The scene encoder, projector and view encoder stay float. Cannot be undone:
        load the checkpoint again for training or saving."""
        if self.int8_weights:
            return self
        if self.device.type != "cpu":
            raise ValueError(f"int8 weights are a CPU decode path; the model is on {self.device}")
        from r1_core.model.quantize import Int8WeightOnlyLinear, quantize_linears_int8

        self.merge_lora()
        if quantize_linears_int8(self.backbone.decoder) == 0:
            raise ValueError(f"backbone {self.cfg.backbone!r}: no linear layer to quantise")
        if type(self.backbone.lm_head) is nn.Linear:
            self.backbone.lm_head = Int8WeightOnlyLinear.from_linear(self.backbone.lm_head)
        self._int8_weights = True
        return self

    def unmerge_lora(self) -> "R1Model":
        if self.int8_weights:
            raise ValueError("unmerge_lora: the weights were quantised to int8 (quantize_int8 is one way); "
                             "load the checkpoint again")
        if self.lora_merged:
            self.lm.unmerge_adapter()
            self._lora_merged = False
        return self

    @property
    def device(self) -> torch.device:
        return self.backbone.device

    @property
    def tokenizer(self):
        return self.backbone.tokenizer

    def trainable_modules(self) -> dict[str, nn.Module]:
        """Our trained parts (saved in checkpoints next to the LoRA adapter)."""
        mods = {"encoder": self.encoder, "projector": self.projector, "pose_embed": self.pose_embed}
        if self.view_encoder is not None:
            mods["view_encoder"] = self.view_encoder
        if self.depth is not None:
            mods["depth_proj"] = self.depth.proj
        return mods

    def tokenizer_fingerprint(self) -> str:
        tok = self.tokenizer
        h = hashlib.sha256()
        h.update(str(len(tok)).encode())
        h.update((tok.chat_template or "").encode())
        h.update(" ".join(tok.convert_ids_to_tokens(list(range(0, len(tok), max(1, len(tok) // 97))))).encode())
        return h.hexdigest()[:16]

    # ---- scene and views --------------------------------------------------------------
    @torch.no_grad()
    def encode_scene(self, cloud: np.ndarray | torch.Tensor) -> SceneEncoding:
        """Run the (frozen) detector side of the encoder on one cloud (N, 6|9): P object
        proposals and their features. Cache the result while the scene does not change; the
        trainable token MLP and projector run when the prompt is assembled."""
        pts = torch.as_tensor(np.asarray(cloud) if not isinstance(cloud, torch.Tensor) else cloud,
                              dtype=torch.float32)
        prepared, _ = self.encoder.prepare(pts)
        out: EncoderOutput = self.encoder(prepared[None].to(self.device))
        boxes = out.boxes[0].detach().cpu().numpy()
        # the colour vote costs ~60 ms a scene on a CPU: only for models that read it
        colors = dominant_colors(prepared[:, :6].cpu().numpy(), boxes) if self.cfg.label_colors else None
        enc = SceneEncoding(out.token_inputs[0], boxes, out.scores[0].detach().cpu().numpy(),
                            out.labels[0].cpu().numpy(), num_points=int(pts.shape[0]), colors=colors)
        if self.cfg.object_order == "class":
            # same-class proposals side by side: the model lists "the chairs" as one run of refs
            enc = enc.reordered(np.lexsort((boxes[:, 1], boxes[:, 0], enc.labels)))
        return enc

    def _view_inputs(self, views: list[ViewInput]) -> tuple[torch.Tensor | None, list, torch.Tensor | None, torch.Tensor | None]:
        if not views:
            return None, [], None, None
        dev = self.device
        T = torch.tensor(np.stack([v.T_map_optical for v in views]), dtype=torch.float32, device=dev)
        pose = self.pose_embed(T)
        if self.view_encoder is not None:
            tokens = self.view_encoder(self.view_encoder.images_to_tensor(views, dev))
            if self.depth is not None:
                tokens = tokens + self.depth.view_tokens([v.color for v in views]).to(tokens.dtype)
            return tokens, [], None, pose
        images, grid = self.backbone.encode_images([v.color for v in views])
        if self.depth is not None:
            extra = self.depth.view_tokens([v.color for v in views])           # (V, 1, H)
            images = [im + extra[i].to(im.dtype) for i, im in enumerate(images)]
        return None, images, grid, pose

    # ---- prompt layout ----------------------------------------------------------------
    def prepare(self, scene: SceneEncoding, views: list[ViewInput], query: SceneQuery,
                target: str | list[int] | None = None) -> PreparedSample:
        """Tokenise the prompt (and the training target: text, or the exact token ids of a
        sampled completion, which GRPO scores without re-tokenising) and record the embedding
        slots."""
        view_tokens, view_images, grid, pose = self._view_inputs(views)
        tok = self.tokenizer
        if self.backbone.has_vision:
            counts = self.backbone.image_token_count(grid) if views else []
            view_slots = [c + 1 for c in counts]                 # image tokens + the pose token
        else:
            view_slots = [self.cfg.views.tokens_per_view + 1] * len(views)
        labels = None
        if self.cfg.label_objects:
            labels = object_labels(scene, self.cfg.label_colors)
        pieces = build_prompt(query, len(scene.token_inputs), view_slots, tok, self.cfg.system_prompt,
                              target_ref=self.target_ref(scene, query), object_labels=labels)
        ids: list[int] = []
        slots: list[tuple[int, str, int, int]] = []
        img_pad = tok.convert_tokens_to_ids(IMAGE_PAD) if self.backbone.has_vision else None
        for piece in pieces:
            if not piece.kind:
                ids += self.text_ids(piece.text)
                continue
            if piece.kind == "view" and self.backbone.has_vision:
                n_img = piece.slots - 1
                ids += self.text_ids(VISION_START)
                slots.append((len(ids), "image", piece.index, n_img))
                ids += [img_pad] * n_img
                ids += self.text_ids(VISION_END)
                slots.append((len(ids), "pose", piece.index, 1))
                ids += [self.slot_id]
                continue
            slots.append((len(ids), piece.kind, piece.index, piece.slots))
            ids += [self.slot_id] * piece.slots
        prompt_len = len(ids)
        labels = [-100] * prompt_len
        if target is not None:
            tgt = (list(target) if not isinstance(target, str)
                   else tok(target, add_special_tokens=False)["input_ids"] + [self.eos_id])
            ids += tgt
            labels += tgt
        if len(ids) > self.cfg.max_length:
            raise ValueError(f"sample of {len(ids)} tokens exceeds max_length {self.cfg.max_length}")
        return PreparedSample(ids, labels, slots, scene, view_tokens, view_images, grid, pose, prompt_len)

    def with_target(self, prompt: PreparedSample, target_ids: list[int]) -> PreparedSample:
        """A prepared prompt (no target) with a completion's token ids as its target: the view
        encoding and tokenisation are shared, not redone (GRPO scores G completions per prompt)."""
        if len(prompt.input_ids) != prompt.prompt_len:
            raise ValueError(f"with_target: the sample already has a target ({len(prompt.input_ids) - prompt.prompt_len} tokens)")
        n = prompt.prompt_len + len(target_ids)
        if n > self.cfg.max_length:
            raise ValueError(f"sample of {n} tokens exceeds max_length {self.cfg.max_length}")
        return replace(prompt, input_ids=prompt.input_ids + list(target_ids),
                       labels=prompt.labels + list(target_ids), _projected=None)

    @staticmethod
    def target_ref(scene: SceneEncoding, query: SceneQuery, min_iou: float = 0.25) -> int | None:
        """The proposal an object_caption target box matches best (IoU >= min_iou), if any."""
        if query.target_box is None or len(scene.boxes) == 0:
            return None
        from r1_core.geometry.boxes import box_iou_3d

        iou = np.asarray(box_iou_3d(np.asarray(query.target_box, np.float32)[None], scene.boxes))[0]
        k = int(iou.argmax())
        return k if iou[k] >= min_iou else None

    def _slot_embeddings(self, s: PreparedSample, kind: str, index: int, length: int) -> torch.Tensor:
        if kind == "scene":
            return self._scene_tokens(s)[index:index + 1]
        if kind == "view":  # text-only: image tokens then the pose token
            return torch.cat([s.view_tokens[index], s.pose_tokens[index:index + 1]], dim=0)
        if kind == "image":
            return s.view_images[index]
        if kind == "pose":
            return s.pose_tokens[index:index + 1]
        raise ValueError(f"unknown slot kind {kind!r}")

    def _scene_tokens(self, s: PreparedSample) -> torch.Tensor:
        """Projected scene tokens (P, hidden), computed once per sample per collate."""
        if s._projected is None:
            x = s.scene.token_inputs.to(self.device, torch.float32)
            s._projected = self.projector(self.encoder.tokens(x))
        return s._projected

    def collate(self, samples: list[PreparedSample], for_generation: bool = False) -> Batch:
        """Pad (left for generation, right for training) and fill the embedding slots."""
        dev, dtype = self.device, self.backbone.dtype
        L = max(len(s.input_ids) for s in samples)
        B = len(samples)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((B, L), pad, dtype=torch.long)
        labels = torch.full((B, L), -100, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        offsets = []
        for b, s in enumerate(samples):
            n = len(s.input_ids)
            off = L - n if for_generation else 0
            offsets.append(off)
            ids[b, off:off + n] = torch.tensor(s.input_ids)
            labels[b, off:off + n] = torch.tensor(s.labels)
            mask[b, off:off + n] = 1
        ids, labels, mask = ids.to(dev), labels.to(dev), mask.to(dev)
        embeds = self.backbone.embed_tokens(ids)
        rows, cols, values = [], [], []
        for b, s in enumerate(samples):
            for start, kind, index, length in s.slots:
                emb = self._slot_embeddings(s, kind, index, length)
                if emb.shape[0] != length:
                    raise ValueError(f"slot {kind}[{index}] expects {length} embeddings, got {emb.shape[0]}")
                rows += [b] * length
                cols += list(range(offsets[b] + start, offsets[b] + start + length))
                values.append(emb)
        for s in samples:
            s._projected = None
        if values:
            embeds = embeds.index_put((torch.tensor(rows, device=dev), torch.tensor(cols, device=dev)),
                                      torch.cat(values).to(dtype))
        position_ids = self._positions(ids, mask, samples, offsets)
        return Batch(ids, mask, position_ids, embeds, labels, samples)

    def _positions(self, ids: torch.Tensor, mask: torch.Tensor, samples: list[PreparedSample],
                   offsets: list[int]) -> torch.Tensor:
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        if not self.backbone.uses_mrope:
            return pos
        grids = [s.image_grid for s in samples if s.image_grid is not None]
        if not grids:
            return pos[None].expand(3, -1, -1).clone()
        inner = self.lm.get_base_model().model if hasattr(self.lm, "get_base_model") else self.lm.model
        img_pad = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        mm = (ids == img_pad).int()
        position_ids, _ = inner.get_rope_index(ids, mm, image_grid_thw=torch.cat(grids), attention_mask=mask)
        return position_ids

    # ---- training signals ---------------------------------------------------------------
    def hidden_states(self, batch: Batch) -> torch.Tensor:
        out = self.backbone.decoder(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids, use_cache=False)
        return out.last_hidden_state

    def token_logprobs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of the label tokens: (B, L-1) values and a (B, L-1) bool mask."""
        h = self.hidden_states(batch)[:, :-1]
        target = batch.labels[:, 1:]
        mask = target != -100
        logp = torch.zeros(target.shape, dtype=torch.float32, device=h.device)
        logits = self.backbone.lm_head(h[mask]).float()
        logp[mask] = torch.log_softmax(logits, -1).gather(-1, target[mask][:, None]).squeeze(-1)
        return logp, mask

    def forward(self, items: list[tuple[SceneEncoding, list[ViewInput], SceneQuery, str]]) -> torch.Tensor:
        """Training forward: (scene, views, query, target text) items -> mean response loss.
        Everything trainable runs inside forward, so DDP/FSDP wrappers see it."""
        samples = [self.prepare(scene, views, query, target) for scene, views, query, target in items]
        return self.loss(self.collate(samples))

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the response tokens."""
        h = self.hidden_states(batch)[:, :-1]
        target = batch.labels[:, 1:]
        mask = target != -100
        if not mask.any():
            raise ValueError("batch has no response tokens to train on")
        logits = self.backbone.lm_head(h[mask]).float()
        return F.cross_entropy(logits, target[mask])
