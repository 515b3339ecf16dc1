"""Weight-only int8 for CPU decoding.

On a CPU, decoding a small LM is bound by memory bandwidth: each new token reads every weight
once. R1-nano's SmolLM2-135M holds 540 MB of fp32 weights (113 MB of them the tied LM head),
which a 2-core machine streams at ~8.6 GB/s: ~62 ms per token. Stored as int8 with one scale
per output channel, the weights are 4x smaller.

Why our own module and not a library: `torch.ao.quantization.quantize_dynamic` also quantises
the activations (per tensor, per call), and that breaks R1-nano's answers (measured: malformed
output on the demo scene); torchao is not in the pinned stack. torch's own
`aten._weight_int8pack_mm` is the weight-only kernel: activations stay floating point (bf16,
the precision R1-nano was fine-tuned in), so the only new error is the weight rounding.

Decode steps (a few rows) run on that kernel; prefill (hundreds of rows, compute-bound) runs a
float matmul on the weights dequantised on the fly, which is faster there than the int8 kernel,
in bf16 where the CPU has native bf16 matmuls (PREFILL_DTYPE).

Measured on the 2-core machine (bench/inference.py --cpu, 2026-11-25): a grounding request takes
1.74 s instead of 3.90 s (2.2x), with the same 64 greedy tokens. A decode step takes ~16 ms instead
of ~42 ms; prefill of the 450-token prompt 0.30 s instead of 0.60 s. Answers can change: on 143
grounding and QA requests of two synthetic rooms (`r1 eval --lm-weights int8` against float, same
inputs) 9 answers differ, Acc@0.25 51.4 -> 49.5 and QA EM 40.6 -> 37.5. So float stays the default.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

DECODE_ROWS = 8      # at most this many rows per call: the int8 kernel; more: dequantise + float matmul
# Prefill's float matmul runs in bf16 where the CPU multiplies bf16 natively (AVX512-BF16): on the
# 2-core machine a (450 x 576) @ (576 x 1536) matmul takes 0.85 ms in bf16 and 3.9 ms in fp32, and
# R1-nano's prefill halves (0.60 -> 0.30 s). Elsewhere bf16 is emulated and slower: fp32 there.
PREFILL_DTYPE = torch.bfloat16 if torch.cpu._is_avx512_bf16_supported() else torch.float32


class Int8WeightOnlyLinear(nn.Module):
    """A frozen nn.Linear with int8 weights and per-output-channel scales (symmetric, ±127)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        w = weight.detach().float()
        if w.ndim != 2:
            raise ValueError(f"Int8WeightOnlyLinear: expected a 2-D weight, got shape {tuple(w.shape)}")
        scale = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("scale_bf16", scale.to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.in_features, self.out_features = w.shape[1], w.shape[0]

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8WeightOnlyLinear":
        return cls(linear.weight, linear.bias)

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return (self.qweight.to(dtype) * self.scale[:, None].to(dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] <= DECODE_ROWS and x.device.type == "cpu":
            y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16).contiguous(), self.qweight,
                                                   self.scale_bf16).to(x.dtype)
        else:
            dtype = PREFILL_DTYPE if x.device.type == "cpu" and x.dtype == torch.float32 else x.dtype
            y = F.linear(x2.to(dtype), self.dequantized(dtype)).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_linears_int8(module: nn.Module) -> int:
    """Replace every plain nn.Linear below `module` (in place) by Int8WeightOnlyLinear; returns how
    many. LoRA wrappers are left alone (merge the adapter first: their base layers are replaced)."""
    n = 0
    for name, child in list(module.named_children()):
        if name.startswith("lora_"):
            continue                       # adapter matrices: merged into the base layer, never run
        if type(child) is nn.Linear:
            setattr(module, name, Int8WeightOnlyLinear.from_linear(child))
            n += 1
        else:
            n += quantize_linears_int8(child)
    return n
