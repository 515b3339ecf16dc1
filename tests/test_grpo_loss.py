"""GRPO math (training/grpo_loss.py): hand-computed advantages, clipped objective and KL; equality
with TRL 1.16's own GRPOTrainer loss code on identical inputs (every loss type we support).

    .venv/bin/python -m pytest tests/test_grpo_loss.py -q
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.grpo_loss import LOSS_TYPES, group_advantages, grpo_loss

LN2 = math.log(2.0)
# TRL 1.16's own GRPOConfig trips this transformers deprecation; nothing of ours.
pytestmark = pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")


# ---- advantages -----------------------------------------------------------------------------
def test_group_advantages_hand_computed():
    # Group 0: rewards 1, 2, 3, 6 -> mean 3, deviations -2, -1, 0, 3; unbiased variance
    # (4 + 1 + 0 + 9) / 3 = 14/3, std = sqrt(14/3). Group 1: all equal -> advantage 0.
    r = torch.tensor([1.0, 2.0, 3.0, 6.0, 5.0, 5.0, 5.0, 5.0])
    std = math.sqrt(14.0 / 3.0)
    want = torch.tensor([-2.0, -1.0, 0.0, 3.0, 0, 0, 0, 0]) / torch.tensor([std + 1e-4] * 4 + [1e-4] * 4)
    torch.testing.assert_close(group_advantages(r, 4), want, rtol=0, atol=1e-6)
    # eps = 0: the deviations over the exact std.
    torch.testing.assert_close(group_advantages(r[:4], 4, eps=0.0),
                               torch.tensor([-2.0, -1.0, 0.0, 3.0]) / std, rtol=0, atol=1e-6)
    # scale=False (Dr. GRPO): deviations from the group mean only.
    torch.testing.assert_close(group_advantages(r, 4, scale=False),
                               torch.tensor([-2.0, -1.0, 0.0, 3.0, 0, 0, 0, 0]), rtol=0, atol=0)
    # G = 2: (r - mean) / std is +-1/sqrt(2) whatever the two distinct rewards are.
    a = group_advantages(torch.tensor([1.0, 0.0, 0.2, 0.8]), 2, eps=0.0)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(a, torch.tensor([s, -s, -s, s]), rtol=0, atol=1e-6)


def test_group_advantages_match_trl_std_convention():
    from trl.trainer.utils import nanstd

    g = torch.Generator().manual_seed(0)
    for G in (2, 3, 8):
        r = torch.rand(5 * G, generator=g)
        grouped = r.view(-1, G)
        mean = grouped.mean(1).repeat_interleave(G)
        std = nanstd(grouped, dim=1).repeat_interleave(G)          # TRL's std (Bessel-corrected)
        torch.testing.assert_close(group_advantages(r, G), (r - mean) / (std + 1e-4), rtol=0, atol=1e-6)
        # Advantages sum to zero in each group; shifting/scaling rewards within a group changes nothing.
        assert torch.allclose(group_advantages(r, G).view(-1, G).sum(1), torch.zeros(5), atol=1e-5)
        torch.testing.assert_close(group_advantages(3.0 * r + 7.0, G, eps=0.0), group_advantages(r, G, eps=0.0),
                                   rtol=0, atol=1e-4)


def test_group_advantages_errors():
    with pytest.raises(ValueError, match="not a positive multiple of group_size 3"):
        group_advantages(torch.zeros(4), 3)
    with pytest.raises(ValueError, match=r"expected shape \(N\*G,\)"):
        group_advantages(torch.zeros(2, 2), 2)
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        group_advantages(torch.zeros(4), 1)
    assert torch.equal(group_advantages(torch.tensor([1.0, 2.0]), 1, scale=False), torch.zeros(2))
    with pytest.raises(ValueError, match=r"non-finite values at indices \[1\]"):
        group_advantages(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="group_size: expected a positive integer"):
        group_advantages(torch.zeros(4), 0)


# ---- the hand-computed loss -------------------------------------------------------------------
def _hand_case():
    """2 groups x 2 completions x 3 tokens. Advantages as group_advantages(scale=False) gives for
    rewards (1, 0 | 0, 2): (+0.5, -0.5 | -1, +1). Completion 2 has 2 real tokens, completion 3 one.

    ratio r = exp(logp - old):      completion 0: 1.1, 1.5, 0.5   (A = +0.5)
                                    completion 1: 0.9, 0.5, 1.5   (A = -0.5)
                                    completion 2: 1.0, 2.0, pad   (A = -1)
                                    completion 3: 0.7, pad, pad   (A = +1)
    d = ref - logp:                 (0, ln2, -ln2), (0, 0, 0), (ln2, 0, pad), (-ln2, pad, pad)
    """
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 2.0]), 2, scale=False)
    assert adv.tolist() == [0.5, -0.5, -1.0, 1.0]
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2], [-0.7, -1.5, -9.0], [-2.5, -9.0, -9.0]],
                        dtype=torch.float64)
    r = torch.tensor([[1.1, 1.5, 0.5], [0.9, 0.5, 1.5], [1.0, 2.0, 1.0], [0.7, 1.0, 1.0]], dtype=torch.float64)
    d = torch.tensor([[0, LN2, -LN2], [0, 0, 0], [LN2, 0, 0], [-LN2, 0, 0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    return logp, logp - torch.log(r), logp + d, adv.double(), mask


# Clipped surrogate s = min(r*A, clip(r, 0.8, 1.2)*A) per real token:
#   c0 (A=+.5): 0.55, min(.75, .6)=0.6 [clipped], min(.25, .4)=0.25      sum 1.4
#   c1 (A=-.5): -0.45, min(-.25, -.4)=-0.4 [clipped], min(-.75, -.6)=-0.75  sum -1.6
#   c2 (A=-1):  -1.0, min(-2, -1.2)=-2.0                                   sum -3.0
#   c3 (A=+1):  min(.7, .8)=0.7                                            sum 0.7
# k3 KL = e^d - d - 1:  d=0 -> 0;  d=ln2 -> 1 - ln2;  d=-ln2 -> ln2 - 1/2.
# Per-token loss = -s + 0.1 * KL; per-completion sums:
#   c0: -1.4 + 0.1*(1 - ln2 + ln2 - 1/2) = -1.35     (3 tokens)
#   c1: +1.6                                          (3 tokens)
#   c2: +3.0 + 0.1*(1 - ln2)                          (2 tokens)
#   c3: -0.7 + 0.1*(ln2 - 1/2)                        (1 token)
#   all 9 tokens: 2.5 + 0.1 * 1.0 = 2.6
GRPO_HAND = (-1.35 / 3 + 1.6 / 3 + (3.0 + 0.1 * (1 - LN2)) / 2 + (-0.7 + 0.1 * (LN2 - 0.5))) / 4
HAND = {"grpo": GRPO_HAND, "bnpo": 2.6 / 9, "dr_grpo": 2.6 / (4 * 3), "dapo": 2.6 / 9}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_loss_hand_computed(loss_type):
    logp, old, ref, adv, mask = _hand_case()
    lp = logp.clone().requires_grad_(True)
    loss, metrics = grpo_loss(lp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type=loss_type)
    assert abs(loss.item() - HAND[loss_type]) < 1e-12
    assert abs(GRPO_HAND - 0.2294976) < 1e-6     # the number written out
    # KL mean over the 9 real tokens = 1.0 / 9; clipped where the clip binds: c0 t1 (r=1.5 > 1.2,
    # A > 0) and c1 t1 (r=0.5 < 0.8, A < 0) -> 2 of 9. c2 t1 (r=2, A<0) and c3 t0 (r=.7, A>0) are not.
    assert abs(float(metrics["kl"]) - 1.0 / 9) < 1e-12
    assert abs(float(metrics["clip_ratio"]) - 2.0 / 9) < 1e-12
    assert abs(float(metrics["clip_ratio_low"]) - 1.0 / 9) < 1e-12
    assert abs(float(metrics["clip_ratio_high"]) - 1.0 / 9) < 1e-12
    # Gradient per token (before aggregation): -A*r where the unclipped term is the min, 0 where the
    # clip binds; KL term beta * (1 - e^d):  d=ln2 -> -0.1, d=-ln2 -> +0.05.
    g_tok = torch.tensor([[-0.55, 0.0 - 0.1, -0.25 + 0.05],
                          [0.45, 0.0, 0.75],
                          [1.0 - 0.1, 2.0, 0.0],
                          [-0.7 + 0.05, 0.0, 0.0]], dtype=torch.float64)
    scale = {"grpo": torch.tensor([[1 / 12], [1 / 12], [1 / 8], [1 / 4]], dtype=torch.float64),
             "bnpo": 1 / 9, "dr_grpo": 1 / 12, "dapo": 1 / 9}[loss_type]
    loss.backward()
    torch.testing.assert_close(lp.grad, g_tok * scale, rtol=0, atol=1e-12)


def test_grpo_loss_hand_variants():
    logp, old, ref, adv, mask = _hand_case()
    # Dr. GRPO's constant: the maximum completion length, not this batch's T.
    loss, _ = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type="dr_grpo", max_completion_length=4)
    assert abs(loss.item() - 2.6 / 16) < 1e-12
    # DAPO normalises by the token count of the whole accumulated batch.
    loss, _ = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type="dapo", num_items=13)
    assert abs(loss.item() - 2.6 / 13) < 1e-12
    # beta = 0: no KL in the loss (but still reported), sums 1.4 | -1.6 | -3.0 | 0.7 of -s.
    loss, m = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.0, loss_type="grpo")
    assert abs(loss.item() - (-1.4 / 3 + 1.6 / 3 + 3.0 / 2 - 0.7) / 4) < 1e-12
    assert abs(float(m["kl"]) - 1.0 / 9) < 1e-12
    loss, m = grpo_loss(logp, old, None, adv, mask, clip_eps=0.2, beta=0.0, loss_type="bnpo")
    assert abs(loss.item() - 2.5 / 9) < 1e-12 and "kl" not in m
    # clip_eps_high = 0.6 (DAPO's clip-higher): c0 t1 (r=1.5) is now inside -> s = 0.75 instead of 0.6.
    loss, m = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, clip_eps_high=0.6, beta=0.1, loss_type="bnpo")
    assert abs(loss.item() - (2.6 - 0.15) / 9) < 1e-12
    assert abs(float(m["clip_ratio_high"])) < 1e-12
    # kl_is_correction (TRL's use_bias_correction_kl): KL * r -> c0: (1-ln2)*1.5 + (ln2-.5)*.5,
    # c2: (1-ln2)*1.0, c3: (ln2-.5)*.7.
    kl_corr = (1 - LN2) * 1.5 + (LN2 - 0.5) * 0.5 + (1 - LN2) + (LN2 - 0.5) * 0.7
    loss, m = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.1, loss_type="bnpo", kl_is_correction=True)
    assert abs(loss.item() - (2.5 + 0.1 * kl_corr) / 9) < 1e-12
    # On-policy (old_logp=None): r = 1, loss = -mean A over tokens (+ KL); gradient = -A * 1.
    lp = logp.clone().requires_grad_(True)
    loss, m = grpo_loss(lp, None, None, adv, mask, beta=0.0, loss_type="bnpo")
    assert abs(loss.item() - (-(0.5 * 3 - 0.5 * 3 - 1.0 * 2 + 1.0 * 1) / 9)) < 1e-12
    loss.backward()
    torch.testing.assert_close(lp.grad, -adv[:, None].expand(4, 3) * mask / 9, rtol=0, atol=1e-12)
    assert float(m["clip_ratio"]) == 0.0 and abs(float(m["ratio_mean"]) - 1.0) < 1e-12


def test_padding_values_never_reach_the_loss():
    logp, old, ref, adv, mask = _hand_case()
    bad = logp.clone()
    bad[~mask] = float("-inf")                       # what a log-softmax of padding can give
    old_bad, ref_bad = old.clone(), ref.clone()
    old_bad[~mask] = float("nan")
    ref_bad[~mask] = float("inf")
    for lt in LOSS_TYPES:
        a = bad.clone().requires_grad_(True)
        b = logp.clone().requires_grad_(True)
        la, ma = grpo_loss(a, old_bad, ref_bad, adv, mask, beta=0.1, loss_type=lt)
        lb, mb = grpo_loss(b, old, ref, adv, mask, beta=0.1, loss_type=lt)
        la.backward()
        lb.backward()
        assert torch.isfinite(la) and abs(la.item() - lb.item()) < 1e-12
        assert torch.isfinite(a.grad).all() and torch.equal(a.grad, b.grad)
        assert all(abs(float(ma[k]) - float(mb[k])) < 1e-12 for k in mb)


def test_accumulating_micro_batches_matches_the_full_batch():
    """How a trainer accumulates: "grpo" chunks weighted by len(chunk)/B, "dapo" chunks with
    num_items = the full batch's token count, both sum to the full-batch loss and gradient."""
    g = torch.Generator().manual_seed(3)
    B, T = 8, 6
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    mask = torch.arange(T)[None] < torch.randint(1, T + 1, (B, 1), generator=g)
    for lt in ("grpo", "dapo"):
        full = logp.clone().requires_grad_(True)
        lf, _ = grpo_loss(full, old, ref, adv, mask, beta=0.05, loss_type=lt)
        lf.backward()
        acc = logp.clone().requires_grad_(True)
        total = 0.0
        for c in (slice(0, 3), slice(3, 4), slice(4, 8)):
            n = c.stop - c.start
            kw = {"num_items": mask.sum()} if lt == "dapo" else {}
            lc, _ = grpo_loss(acc[c], old[c], ref[c], adv[c], mask[c], beta=0.05, loss_type=lt, **kw)
            w = n / B if lt == "grpo" else 1.0
            (lc * w).backward()
            total += lc.item() * w
        assert abs(total - lf.item()) < 1e-12
        torch.testing.assert_close(acc.grad, full.grad, rtol=0, atol=1e-12)


def test_grpo_loss_errors():
    logp, old, ref, adv, mask = _hand_case()
    with pytest.raises(ValueError, match=r"unknown loss_type 'ppo'; choose one of \['grpo', 'bnpo', 'dr_grpo', 'dapo'\]"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match=r"old_logp: expected shape \(4, 3\), got \(4, 2\)"):
        grpo_loss(logp, old[:, :2], ref, adv, mask)
    with pytest.raises(ValueError, match=r"advantages: expected shape \(4,\), got \(4, 1\)"):
        grpo_loss(logp, old, ref, adv[:, None], mask)
    with pytest.raises(ValueError, match=r"mask: expected shape \(4, 3\)"):
        grpo_loss(logp, old, ref, adv, mask[:3])
    with pytest.raises(ValueError, match="ref_logp is required when beta > 0"):
        grpo_loss(logp, old, None, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match="beta must be >= 0"):
        grpo_loss(logp, old, ref, adv, mask, beta=-1.0)
    with pytest.raises(ValueError, match="clip_eps must be in"):
        grpo_loss(logp, old, ref, adv, mask, clip_eps=1.5)
    with pytest.raises(ValueError, match=r"max_completion_length \(2\) is shorter than the completions \(T = 3\)"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="dr_grpo", max_completion_length=2)
    with pytest.raises(ValueError, match="num_items"):
        grpo_loss(logp, old, ref, adv, mask, loss_type="dapo", num_items=3)
    with pytest.raises(ValueError, match=r"logp: expected a \(B, T\) tensor"):
        grpo_loss(logp[0], old, ref, adv, mask)


# ---- equality with TRL's own GRPOTrainer loss -------------------------------------------------
def _byte_tokenizer():
    """Byte-level BPE (256 byte symbols + 2 specials), built in memory (../shared/ML_NOTES.md)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 causal LM + tokenizer saved to a temp dir (TRL builds its frozen
    reference model from the path when beta > 0)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _byte_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.2))
    d = tmp_path_factory.mktemp("tiny_qwen2")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _trl_trainer(model_dir, tmp_path, reward_funcs=None, **grpo_args):
    """A real trl.GRPOTrainer (TRL's own __init__) on the tiny model, CPU, float32 (TRL's config
    defaults to bf16 autocast), no logging."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=4, num_generations=2,
                      report_to=[], use_cpu=True, bf16=False, logging_steps=1, **grpo_args)
    trainer = GRPOTrainer(model=str(model_dir),
                          reward_funcs=reward_funcs or (lambda prompts, completions, **kw: [0.0] * len(prompts)),
                          args=args, train_dataset=Dataset.from_dict({"prompt": ["ab", "cd"]}))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1   # what Trainer's loop sets each step
    return trainer


def _random_case(seed: int, B: int = 6, T: int = 5):
    """Log-probs with ratios well inside and outside [1-eps, 1+eps], both advantage signs, ragged
    masks including an empty completion."""
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g) * 4 - 0.05
    old = logp + 0.6 * torch.randn(B, T, generator=g)
    ref = logp + 0.5 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    adv[0], adv[1] = 1.3, -0.9
    lengths = torch.tensor([T, 1, 3, 0, T, 2])[:B]
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    return logp, old, ref, adv, mask


TRL_CASES = [
    # (loss_type, beta, epsilon_high or None, use_bias_correction_kl)
    ("grpo", 0.04, None, False),
    ("grpo", 0.04, None, True),
    ("grpo", 0.0, None, False),
    ("grpo", 0.1, 0.28, False),
    ("bnpo", 0.04, None, False),
    ("bnpo", 0.0, 0.28, True),
    ("dr_grpo", 0.04, None, False),
    ("dr_grpo", 0.0, None, False),
    ("dapo", 0.04, 0.28, False),
    ("dapo", 0.0, None, True),
]


@pytest.mark.parametrize("case", range(len(TRL_CASES)), ids=["-".join(map(str, c)) for c in TRL_CASES])
def test_loss_equals_trl_grpo_trainer(tiny_model_dir, tmp_path, case):
    """TRL's GRPOTrainer._compute_loss on identical log-probs, advantages and masks: the model's
    log-prob function is replaced by one returning our tensor, everything else is TRL's code."""
    loss_type, beta, eps_high, bias_kl = TRL_CASES[case]
    T = 5
    extra = {"epsilon_high": eps_high} if eps_high is not None else {}
    trainer = _trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=beta, epsilon=0.2,
                           use_bias_correction_kl=bias_kl, max_completion_length=T + 3, **extra)
    assert (trainer.loss_type, trainer.beta, trainer.epsilon_low) == (loss_type, beta, 0.2)
    logp, old, ref, adv, mask = _random_case(seed=100 + case, T=T)
    ratio = torch.exp(logp - old)[mask.bool()]
    assert (ratio < 0.8).any() and (ratio > 1.2 + (eps_high or 0.2) - 0.2).any() and ((ratio > 0.8) & (ratio < 1.2)).any()

    trl_lp = logp.clone().requires_grad_(True)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (trl_lp, torch.zeros_like(trl_lp), None)
    B = logp.shape[0]
    num_items = int(mask.sum()) + 7
    inputs = {"prompt_ids": torch.zeros(B, 2, dtype=torch.long), "prompt_mask": torch.ones(B, 2, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": torch.tensor(float(num_items))}
    if beta != 0.0:
        inputs["ref_per_token_logps"] = ref
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    trl_loss.backward()

    ours_lp = logp.clone().requires_grad_(True)
    loss, metrics = grpo_loss(ours_lp, old, ref if beta != 0.0 else None, adv, mask, clip_eps=0.2, beta=beta,
                              loss_type=loss_type, clip_eps_high=eps_high, max_completion_length=T + 3,
                              num_items=num_items, kl_is_correction=bias_kl)
    loss.backward()
    assert abs(loss.item() - trl_loss.item()) < 1e-6, (loss.item(), trl_loss.item())
    torch.testing.assert_close(ours_lp.grad, trl_lp.grad, rtol=0, atol=1e-6)
    trl_m = trainer._metrics["train"]
    assert abs(float(metrics["clip_ratio"]) - trl_m["clip_ratio/region_mean"][-1]) < 1e-6
    assert abs(float(metrics["clip_ratio_low"]) - trl_m["clip_ratio/low_mean"][-1]) < 1e-6
    assert abs(float(metrics["clip_ratio_high"]) - trl_m["clip_ratio/high_mean"][-1]) < 1e-6
    if beta != 0.0:
        assert abs(float(metrics["kl"]) - trl_m["kl"][-1]) < 1e-6


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo"])
def test_loss_equals_trl_on_a_real_tiny_model(tiny_model_dir, tmp_path, loss_type):
    """No substitution at all: TRL scores the completions with the tiny Qwen2 itself; we compute the
    per-token log-probs with a plain forward pass and our loss. Loss and the gradient on every
    model parameter must agree."""
    from transformers import AutoModelForCausalLM

    trainer = _trl_trainer(tiny_model_dir, tmp_path, loss_type=loss_type, beta=0.04, epsilon=0.2,
                           use_bias_correction_kl=False, max_completion_length=6)
    ours = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).train()
    for p_ours, p_trl in zip(ours.parameters(), trainer.model.parameters()):
        assert torch.equal(p_ours, p_trl)
    g = torch.Generator().manual_seed(11)
    B, P, T = 4, 3, 6
    prompt_ids = torch.randint(0, 256, (B, P), generator=g)
    completion_ids = torch.randint(0, 256, (B, T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor([[6], [2], [4], [1]])).long()
    adv = torch.tensor([0.7, -0.7, 1.1, -1.1])

    # Our per-token log-probs: logits at position t predict token t+1.
    ids = torch.cat([prompt_ids, completion_ids], 1)
    logits = ours(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, P - 1:-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None]).squeeze(-1)
    with torch.no_grad():
        old = logp.detach() + 0.5 * torch.randn(B, T, generator=g)
        ref = logp.detach() + 0.5 * torch.randn(B, T, generator=g)
    loss, _ = grpo_loss(logp, old, ref, adv, mask, clip_eps=0.2, beta=0.04, loss_type=loss_type)
    loss.backward()

    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones(B, P, dtype=torch.long),
              "completion_ids": completion_ids, "completion_mask": mask, "advantages": adv,
              "old_per_token_logps": old, "ref_per_token_logps": ref}
    trl_loss = trainer._compute_loss(trainer.model, inputs)
    trl_loss.backward()
    assert abs(loss.item() - trl_loss.item()) < 1e-6, (loss.item(), trl_loss.item())
    for (name, p_ours), p_trl in zip(ours.named_parameters(), trainer.model.parameters()):
        torch.testing.assert_close(p_ours.grad, p_trl.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_rewards_plug_into_trl_grpo_trainer(tiny_model_dir, tmp_path):
    """Our reward callables work as TRL reward functions: TRL names them, passes the dataset
    columns, and turns None (reward not applicable) into NaN, which its nansum then skips."""
    from training.rewards import format_reward, perception_reward

    trainer = _trl_trainer(tiny_model_dir, tmp_path, reward_funcs=[format_reward, perception_reward])
    assert trainer.reward_func_names == ["format", "perception"]
    box = [0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0]
    good = "<think>the chair is by the bed</think><answer>the chair <box>0.5, 0, 0.5, 1, 1, 1</box></answer>"
    stray = good.replace("by the", "by<|im_start|>the")      # format 0, answer still parses
    completions = [good + "<|im_end|>", "<think>x</think>", good, stray]
    inputs = [{"prompt": "p", "gt_boxes": [box], "tasks": "grounding"},
              {"prompt": "p", "gt_boxes": [box], "tasks": "grounding"},
              {"prompt": "p", "gt_boxes": [], "tasks": "qa"},
              {"prompt": "p", "gt_boxes": [box], "tasks": "grounding"}]
    r = trainer._calculate_rewards(inputs, ["p"] * 4, completions, [[0]] * 4).numpy()
    np.testing.assert_allclose(r[:, 0], [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_allclose(r[[0, 1, 3], 1], [1 / 3, 0.0, 1 / 3], atol=1e-6)
    assert np.isnan(r[2, 1])
