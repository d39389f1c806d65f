"""Our on/off options take a bool (or 0 / 1), and anything else is a ValueError naming the
option: a truthy string such as "no" must never switch the output to fp8 by accident
(docs/CONTRACT.md §3.8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sageattention
from sageattention import ops

B, H, N, D = 1, 2, 48, 32


def _qkv():
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randn(B, H, N, D, generator=g).to(torch.bfloat16) for _ in range(3))


ENTRIES = {
    "sageattn": lambda q, k, v, flag: sageattention.sageattn(q, k, v, fp8_output=flag),
    "sageattn_qk_int8_pv_fp8_cuda_sm90": lambda q, k, v, flag: sageattention.sageattn_qk_int8_pv_fp8_cuda_sm90(
        q, k, v, fp8_output=flag),
}


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("bad", ["no", "False", 2, -1, None, 0.0, [True]])
def test_bad_fp8_output_is_named(entry, bad):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="fp8_output"):
        ENTRIES[entry](q, k, v, bad)


@pytest.mark.parametrize("entry", sorted(ENTRIES))
@pytest.mark.parametrize("good,fp8", [(True, True), (False, False), (1, True), (0, False),
                                      (np.bool_(True), True), (np.bool_(False), False)])
def test_good_fp8_output_values(entry, good, fp8):
    q, k, v = _qkv()
    out = ENTRIES[entry](q, k, v, good)
    if fp8:
        assert isinstance(out, tuple) and out[0].dtype == torch.float8_e4m3fn
    else:
        assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16


@pytest.mark.parametrize("bad", ["yes", 2, None])
def test_low_level_fp8_output_is_named(bad):
    q, k, v = (x.transpose(1, 2).contiguous() for x in _qkv())  # NHD
    qq = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v)
    with pytest.raises(ValueError, match="fp8_output"):
        ops.attention_quantized(qq.q_codes, qq.k_codes, vq.v_codes, qq.q_scale, qq.k_scale, vq.v_scale,
                                D ** -0.5, fp8_output=bad, k_mean=qq.k_mean)
