"""Generation: KV-cached decoding with greedy or sampled tokens, stop at `</answer>`, streaming
and cancellation, for a batch of prepared prompts.

    results = generate(model, model.collate(samples, for_generation=True),
                       GenerationSettings(max_new_tokens=64), on_text=[print], cancel=event.is_set)

Why our own loop rather than `transformers.generate`: prompts carry scene/view embeddings and,
for Qwen2.5-VL, 3-axis rotary positions we compute ourselves; streaming text deltas per
request, cancellation and a stop *string* per sequence are simple here and awkward through
generate's hooks. The loop is the standard one (prefill, then one token per step with the
cache); tests compare it token-for-token with `transformers.generate` on text-only prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from r1_core.model.answer import ANSWER_CLOSE


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_strings: tuple[str, ...] = (ANSWER_CLOSE,)
    seed: int | None = None

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class GenerationResult:
    text: str
    token_ids: list[int]
    finish_reason: str      # "stop" (stop string / EOS), "length" or "cancelled"


def _sample(logits: torch.Tensor, s: GenerationSettings, gen: torch.Generator | None) -> torch.Tensor:
    if not s.do_sample:
        return logits.argmax(-1)
    logits = logits.float() / s.temperature
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs > s.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.no_grad()
def generate(model, batch, settings: GenerationSettings,
             on_text: Sequence[Callable[[str], None] | None] | None = None,
             cancel: Callable[[], bool] | Sequence[Callable[[], bool] | None] | None = None,
             ) -> list[GenerationResult]:
    """Decode every prompt of a left-padded batch; see module docstring.

    `cancel` is one callable for the whole batch or one per prompt; a prompt whose callable
    returns True stops with finish_reason "cancelled" (the others go on)."""
    from transformers import DynamicCache

    bb = model.backbone
    tok = bb.tokenizer
    B = batch.input_ids.shape[0]
    dev = batch.inputs_embeds.device
    gen = None
    if settings.seed is not None:
        gen = torch.Generator(device=dev).manual_seed(settings.seed)
    eos = {model.eos_id, tok.eos_token_id}
    cache = DynamicCache(config=bb.model.config.get_text_config() if hasattr(bb.model.config, "get_text_config") else bb.model.config)
    mask = batch.attention_mask
    pos = batch.position_ids
    out = bb.decoder(inputs_embeds=batch.inputs_embeds, attention_mask=mask, position_ids=pos,
                     past_key_values=cache, use_cache=True)
    logits = bb.lm_head(out.last_hidden_state[:, -1])
    next_pos = pos.amax(dim=-1) + 1 if pos.dim() == 2 else pos.amax(dim=(0, 2)) + 1    # (B,)

    tokens: list[list[int]] = [[] for _ in range(B)]
    texts = [""] * B
    done = [False] * B
    reasons = ["length"] * B
    for step in range(settings.max_new_tokens):
        for b in range(B):
            fn = cancel if callable(cancel) else (cancel[b] if cancel is not None else None)
            if not done[b] and fn is not None and fn():
                done[b], reasons[b] = True, "cancelled"
        if all(done):
            break
        nxt = _sample(logits, settings, gen)
        for b in range(B):
            if done[b]:
                continue
            t = int(nxt[b])
            if t in eos:
                done[b], reasons[b] = True, "stop"
                continue
            tokens[b].append(t)
            text = tok.decode(tokens[b], skip_special_tokens=False)
            if text.endswith("\ufffd"):      # an incomplete UTF-8 sequence: wait for more bytes
                continue
            hit = next((s for s in settings.stop_strings if s in text[max(0, len(texts[b]) - len(s)):]), None)
            if hit is not None:
                text = text[: text.index(hit, max(0, len(texts[b]) - len(hit))) + len(hit)]
                done[b], reasons[b] = True, "stop"
            delta = text[len(texts[b]):]
            texts[b] = text
            if delta and on_text is not None and on_text[b] is not None:
                on_text[b](delta)
        if all(done):
            break
        if step == settings.max_new_tokens - 1:
            break
        step_ids = torch.where(torch.tensor(done, device=dev), torch.full_like(nxt, tok.pad_token_id), nxt)
        mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=dev)], dim=1)
        p = next_pos[:, None]
        step_pos = p if pos.dim() == 2 else p[None].expand(3, -1, -1)
        out = bb.decoder(inputs_embeds=bb.embed_tokens(step_ids[:, None]), attention_mask=mask,
                         position_ids=step_pos, past_key_values=cache, use_cache=True)
        logits = bb.lm_head(out.last_hidden_state[:, -1])
        next_pos = next_pos + 1
    final = []
    for b in range(B):
        text = tok.decode(tokens[b], skip_special_tokens=False)
        if reasons[b] == "stop" and texts[b]:
            text = texts[b]
        final.append(GenerationResult(text, tokens[b], reasons[b]))
    return final
