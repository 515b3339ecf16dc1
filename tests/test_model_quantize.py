"""Weight-only int8 (r1_core.model.quantize) against its float reference, and on a tiny R1Model."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from r1_core.model import quantize
from r1_core.model.quantize import DECODE_ROWS, Int8WeightOnlyLinear, quantize_linears_int8


@pytest.mark.parametrize("prefill_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, DECODE_ROWS, DECODE_ROWS + 1, 64])
def test_int8_linear_equals_the_dequantised_reference(rows, prefill_dtype, monkeypatch):
    # both prefill precisions on any CPU: bf16 is chosen where the CPU multiplies bf16 natively
    monkeypatch.setattr(quantize, "PREFILL_DTYPE", prefill_dtype)
    g = torch.Generator().manual_seed(rows)
    lin = nn.Linear(96, 160, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(160, 96, generator=g) * torch.logspace(-2, 0, 160)[:, None])
    q = Int8WeightOnlyLinear.from_linear(lin)
    # the rounding error of every weight is at most half a step of its row's scale
    err = (q.dequantized() - lin.weight).abs()
    assert (err <= q.scale[:, None] / 2 + 1e-7).all()
    x = torch.randn(2, rows, 96, generator=g)
    ref = x @ q.dequantized().T + lin.bias
    out = q(x)
    assert out.shape == (2, rows, 160) and out.dtype == torch.float32
    if 2 * rows <= DECODE_ROWS or prefill_dtype == torch.bfloat16:
        # int8 kernel with bf16 activations, or a bf16 prefill matmul: bf16 rounding of x, w and y
        torch.testing.assert_close(out, ref, rtol=2e-2, atol=2e-2 * ref.abs().max().item())
        assert (out - ref).abs().max() > 0       # it did round: this is not the fp32 path
    else:                           # fp32 matmul on the dequantised weights: the reference itself
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # and close to the original float layer
    assert (out - lin(x)).abs().max() < 0.05 * lin(x).abs().max()


def test_quantize_replaces_plain_linears_only():
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)), nn.Embedding(10, 8))
    m.lora_A = nn.ModuleDict({"default": nn.Linear(8, 2)})
    assert quantize_linears_int8(m) == 2
    assert isinstance(m[0], Int8WeightOnlyLinear) and isinstance(m[2][0], Int8WeightOnlyLinear)
    assert type(m.lora_A["default"]) is nn.Linear and type(m[3]) is nn.Embedding


def test_tiny_r1model_int8_answers_like_float_and_is_one_way(tmp_path):
    from r1_core.model.checkpoint import CheckpointError, save_checkpoint
    from r1_core.model.r1model import ModelConfig, R1Model

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="tiny")
    model = R1Model(cfg).eval()
    batch_rows = torch.randn(1, 5, model.backbone.hidden_size)
    with torch.no_grad():
        ref = model.backbone.lm_head(model.backbone.decoder(inputs_embeds=batch_rows).last_hidden_state)
        model.quantize_int8()
        out = model.backbone.lm_head(model.backbone.decoder(inputs_embeds=batch_rows).last_hidden_state)
    assert model.int8_weights and model.lora_merged
    assert isinstance(model.backbone.lm_head, Int8WeightOnlyLinear)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
    with pytest.raises(ValueError, match="one way"):
        model.unmerge_lora()
    with pytest.raises(CheckpointError, match="merged"):
        save_checkpoint(model, tmp_path / "ckpt")
