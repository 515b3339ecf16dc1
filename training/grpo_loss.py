"""The GRPO objective as pure tensor math: group-normalised advantages and the clipped,
KL-regularised token-level policy loss.

    from training.grpo_loss import group_advantages, grpo_loss
    adv = group_advantages(rewards, group_size=G)                      # (N*G,) -> (N*G,)
    loss, metrics = grpo_loss(logp, old_logp, ref_logp, adv, mask,      # (B, T) each, adv (B,)
                              clip_eps=0.2, beta=0.04, loss_type="grpo")
    loss.backward(); metrics["kl"], metrics["clip_ratio"]

Completions are laid out as G consecutive rows per prompt (prompt 0's G completions, then prompt
1's, ...), as TRL does. `logp` holds the current policy's log-probability of each completion token
(with grad), `old_logp` the same under the policy that sampled them (no grad), `ref_logp` under the
frozen reference policy, `mask` marks real completion tokens (padding = 0).

The objective, per completion token t of completion i (ratio r = exp(logp - old_logp)):

    loss_it = -min(r * A_i, clip(r, 1 - eps_low, 1 + eps_high) * A_i) + beta * KL_it
    KL_it   = exp(ref - logp) - (ref - logp) - 1            (the "k3" estimator, >= 0)

aggregated by `loss_type` (all as in TRL 1.16, checked against its code in the tests):

    "grpo"     mean over each completion's tokens, then mean over completions (DeepSeekMath)
    "bnpo"     mean over all tokens of the batch
    "dr_grpo"  sum over all tokens / (B * max_completion_length)   (Dr. GRPO; use with
               group_advantages(scale=False), its advantages are not divided by the std)
    "dapo"     sum over all tokens / num_items (the token count of the whole accumulated batch,
               so micro-batches accumulate to exactly the full-batch loss)

How this differs from the paper's text: 3D-R1 writes GRPO in the DeepSeek-R1 notation, with
the probability ratio and the KL term stated per completion, π(o_i|q) / π_old(o_i|q), and no
estimator named. Like DeepSeekMath and TRL we apply the ratio, the clip and the k3 KL estimator
per token and average ("grpo") over tokens then completions; a completion-level ratio would be
the product of hundreds of token ratios and is clipped almost always. The advantages use the
unbiased (Bessel-corrected) group std plus eps = 1e-4, as TRL does; the paper only says "std".
With one policy update per batch of samples (num_iterations = 1) old_logp equals logp in value,
the ratio is 1 and the clipped term reduces to the plain policy gradient -A * grad logp, exactly
as in DeepSeekMath's on-policy case. `kl_is_correction=True` multiplies the per-token KL by the
ratio r (TRL's `use_bias_correction_kl`, its default), which changes the KL gradient even when
r = 1; our default (False) is the textbook k3 term the issue asks for.
"""
from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True,
                     eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages: (r - mean_group) / (std_group + eps), or r - mean_group when
    `scale` is False (Dr. GRPO). `rewards` is (N*G,) with each prompt's G completions adjacent.
    std is the unbiased sample std (divides by G - 1), matching TRL's `nanstd`; a group whose
    rewards are all equal gets advantage 0."""
    r = torch.as_tensor(rewards)
    if not r.is_floating_point():
        r = r.to(torch.float32)
    if r.ndim != 1:
        raise ValueError(f"rewards: expected shape (N*G,), got {tuple(r.shape)}")
    if not isinstance(group_size, int) or isinstance(group_size, bool) or group_size < 1:
        raise ValueError(f"group_size: expected a positive integer, got {group_size!r}")
    if r.numel() == 0 or r.numel() % group_size:
        raise ValueError(f"rewards: length {r.numel()} is not a positive multiple of group_size {group_size}")
    if scale and group_size < 2:
        raise ValueError("group_size must be >= 2 when scale=True (the unbiased std of one sample is undefined)")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    if not bool(torch.isfinite(r).all()):
        bad = torch.nonzero(~torch.isfinite(r)).flatten().tolist()
        raise ValueError(f"rewards: non-finite values at indices {bad[:10]}")
    g = r.view(-1, group_size)
    adv = g - g.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (g.std(dim=1, correction=1, keepdim=True) + eps)
    return adv.reshape(-1)


def _check(name: str, t: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor | None, ref_logp: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2, beta: float = 0.04,
              loss_type: str = "grpo", *, clip_eps_high: float | None = None,
              max_completion_length: int | None = None, num_items: float | torch.Tensor | None = None,
              kl_is_correction: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The clipped GRPO loss (a scalar to minimise) and detached metrics.

    logp, old_logp, ref_logp, mask: (B, T); advantages: (B,). `old_logp=None` means on-policy
    (old = logp.detach()). `ref_logp` may be None only when beta == 0. `clip_eps_high` (DAPO's
    "clip higher") defaults to `clip_eps`. `max_completion_length` is Dr. GRPO's constant
    (default T); `num_items` is DAPO's token count (default mask.sum() of this call).
    Masked positions never reach the loss, whatever their values (even inf/NaN).

    Metrics (means over unmasked tokens): "kl" (when ref_logp is given), "clip_ratio" (tokens
    whose ratio left [1-eps_low, 1+eps_high] on the side where the clip binds: r < 1-eps with
    A < 0, or r > 1+eps with A > 0), "clip_ratio_low", "clip_ratio_high", "ratio_mean".
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; choose one of {list(LOSS_TYPES)}")
    if not isinstance(logp, torch.Tensor) or logp.ndim != 2:
        raise ValueError(f"logp: expected a (B, T) tensor, got {getattr(logp, 'shape', type(logp).__name__)}")
    B, T = logp.shape
    _check("old_logp", old_logp, (B, T))
    _check("ref_logp", ref_logp, (B, T))
    _check("mask", mask, (B, T))
    _check("advantages", advantages, (B,))
    if not logp.is_floating_point():
        raise ValueError(f"logp: expected a floating tensor, got {logp.dtype}")
    eps_low = float(clip_eps)
    eps_high = float(clip_eps if clip_eps_high is None else clip_eps_high)
    if not (0.0 <= eps_low < 1.0) or eps_high < 0.0:
        raise ValueError(f"clip_eps must be in [0, 1) and clip_eps_high >= 0, got {clip_eps} and {clip_eps_high}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_logp is None:
        raise ValueError(f"ref_logp is required when beta > 0 (beta = {beta})")

    m = mask.to(torch.bool)
    mf = m.to(logp.dtype)
    zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
    # Padding may hold -inf/NaN log-probs: zero them *before* any arithmetic, so that neither the
    # loss nor the backward pass ever sees them (a torch.where after the fact still lets 0 * inf
    # = NaN into the gradient).
    logp = torch.where(m, logp, zero)
    old_logp = logp.detach() if old_logp is None else torch.where(m, old_logp.to(logp.dtype), zero)
    if ref_logp is not None:
        ref_logp = torch.where(m, ref_logp.to(logp.dtype), zero)
    A = advantages.to(logp.dtype).unsqueeze(1)                      # (B, 1)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.min(ratio * A, clipped * A)
    kl = None
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1.0
        if kl_is_correction:
            kl = kl * ratio
        if beta > 0:
            per_token = per_token + beta * kl
    per_token = torch.where(m, per_token, zero)

    if loss_type == "grpo":
        loss = (per_token.sum(-1) / mf.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = per_token.sum() / mf.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        L = T if max_completion_length is None else int(max_completion_length)
        if L < T:
            raise ValueError(f"max_completion_length ({L}) is shorter than the completions (T = {T})")
        loss = per_token.sum() / (B * L)
    else:  # "dapo"
        n = mf.sum() if num_items is None else torch.as_tensor(num_items, dtype=logp.dtype, device=logp.device)
        if float(n) < float(mf.sum()):
            raise ValueError(f"num_items ({float(n)}) is smaller than this batch's {int(mf.sum())} tokens")
        loss = per_token.sum() / n.clamp(min=1.0)

    with torch.no_grad():
        n_tok = mf.sum().clamp(min=1.0)

        def masked_mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(m, x.to(logp.dtype), zero).sum() / n_tok

        low = (ratio < 1.0 - eps_low) & (A < 0)
        high = (ratio > 1.0 + eps_high) & (A > 0)
        metrics = {"clip_ratio": masked_mean(low | high), "clip_ratio_low": masked_mean(low),
                   "clip_ratio_high": masked_mean(high), "ratio_mean": masked_mean(ratio.detach())}
        if kl is not None:
            metrics["kl"] = masked_mean(kl.detach())
    return loss, metrics
