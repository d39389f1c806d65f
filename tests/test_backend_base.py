"""What the backends share (sageattention/_backends/base.py): the return forms of
attention_quantized with and without caller buffers, and the P·V-mode refusal of a
backend whose ops lack a mode (the Triton backend has no int8 P·V kernel). None of
these needs triton installed: the refusal comes before its kernels load."""
from __future__ import annotations

import pytest
import torch

from sageattention._backends.base import deliver
from sageattention._backends.cpu import CpuBackend
from sageattention._backends.triton import TritonBackend


def _t(*shape: int) -> torch.Tensor:
    return torch.arange(float(torch.Size(shape).numel())).reshape(shape)


@pytest.mark.parametrize("fp8_output", [False, True])
@pytest.mark.parametrize("return_lse", [False, True])
def test_deliver_return_forms(fp8_output: bool, return_lse: bool) -> None:
    o, o_scale, lse = _t(1, 2, 3, 4), _t(1, 2, 3, 1), _t(1, 3, 2)
    got = deliver(o, o_scale if fp8_output else None, lse if return_lse else None,
                  out=None, out_scale=None, fp8_output=fp8_output, return_lse=return_lse)
    want = (o,) + ((o_scale,) if fp8_output else ()) + ((lse,) if return_lse else ())
    got_t = got if isinstance(got, tuple) else (got,)
    assert len(got_t) == len(want) and all(g is w for g, w in zip(got_t, want))


def test_deliver_fills_caller_buffers() -> None:
    o, o_scale, lse = _t(1, 2, 3, 4), _t(1, 2, 3, 1), _t(1, 3, 2)
    out, out_scale = torch.zeros_like(o), torch.zeros_like(o_scale)
    got = deliver(o, o_scale, lse, out=out, out_scale=out_scale, fp8_output=True, return_lse=True)
    assert isinstance(got, tuple) and got[0] is out and got[1] is out_scale and got[2] is lse
    assert torch.equal(out, o) and torch.equal(out_scale, o_scale)
    # Without fp8 output, out_scale is neither written nor returned.
    spare = torch.zeros_like(o_scale)
    assert deliver(o, None, None, out=None, out_scale=spare, fp8_output=False, return_lse=False) is o
    assert not spare.any()


def test_triton_backend_refuses_int8_pv_before_loading_kernels() -> None:
    tb = TritonBackend()
    v = torch.randn(1, 8, 2, 16, dtype=torch.bfloat16)
    with pytest.raises(NotImplementedError, match=r"dtype: the int8 P·V mode .*triton"):
        tb.quantize_v(v, quant_recipe=(128, 16, -1, 1), dtype="int8")
    q = torch.zeros(1, 8, 2, 16, dtype=torch.int8)
    s = torch.ones(1, 1, 1)
    with pytest.raises(NotImplementedError, match=r"v: the int8 P·V mode .*triton"):
        tb.attention_quantized(q, q, q, s, s, s, 0.25, False, (128, 16, -1, 1), False, False,
                               k_mean=None, out_dtype=torch.bfloat16)


def test_cpu_backend_runs_every_pv_mode() -> None:
    from sageattention._pv import PvMode

    assert CpuBackend.pv_modes == frozenset(PvMode)
