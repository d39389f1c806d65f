"""torch.compile, inference_mode / no_grad and autograd (issue 4): every public function
traces under torch.compile(fullgraph=True) and gives the eager result; inputs that
require grad run forward, and backward raises a RuntimeError saying "forward only"."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import reference as ref
import torch

import sageattention
from sageattention import ops


def _dynamo_supported() -> bool:
    import torch._dynamo

    probe = getattr(torch._dynamo, "is_dynamo_supported", None)
    return bool(probe()) if probe is not None else True


# torch < 2.4 has no Dynamo on Python 3.12+: torch.compile itself raises there, whatever it compiles.
pytestmark = pytest.mark.skipif(not _dynamo_supported(),
                                reason=f"torch {torch.__version__} has no Dynamo (torch.compile) on this Python")

B, HQ, HKV, NQ, NK, D = 1, 4, 2, 24, 40, 32


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _qkv(layout: str = "HND", dtype: torch.dtype = torch.bfloat16, nq: int = NQ, nk: int = NK
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = ref.randn(ref.layout_shape(B, HQ, nq, D, layout), dtype=dtype, seed=1)
    k = ref.randn(ref.layout_shape(B, HKV, nk, D, layout), dtype=dtype, seed=2)
    v = ref.randn(ref.layout_shape(B, HKV, nk, D, layout), dtype=dtype, seed=3)
    return q, k, v


def _packed() -> tuple[torch.Tensor, ...]:
    lengths_q, lengths_k = [7, 17], [11, 29]
    q = ref.randn((sum(lengths_q), HQ, D), seed=4)
    k = ref.randn((sum(lengths_k), HKV, D), seed=5)
    v = ref.randn((sum(lengths_k), HKV, D), seed=6)
    cu_q = torch.tensor([0, 7, 24], dtype=torch.int32)
    cu_k = torch.tensor([0, 11, 40], dtype=torch.int32)
    return q, k, v, cu_q, cu_k


def _mask() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    m = torch.rand(B, 1, NQ, NK, generator=g) > 0.3
    m[..., 0] = True
    return m


# name -> (function of tensors, builder of its tensor inputs). Non-tensor options are
# closed over, as a client's model code would pass them.
def _cases() -> dict[str, tuple[Callable[..., Any], Callable[[], tuple[torch.Tensor, ...]]]]:
    s = sageattention
    return {
        "sageattn": (lambda q, k, v: s.sageattn(q, k, v), _qkv),
        "sageattn_lse_causal_nhd": (
            lambda q, k, v: s.sageattn(q, k, v, tensor_layout="NHD", is_causal=True, return_lse=True),
            lambda: _qkv("NHD")),
        "sageattn_fp8_output": (lambda q, k, v: s.sageattn(q, k, v, fp8_output=True), _qkv),
        "sageattn_fp8_output_lse": (
            lambda q, k, v: s.sageattn(q, k, v, fp8_output=True, return_lse=True, qk_quant_dtype="fp8",
                                       quant_recipe=(128, 128, -1, 128)), _qkv),
        "sageattn_mask": (lambda q, k, v, m: s.sageattn(q, k, v, attn_mask=m, return_lse=True),
                          lambda: _qkv() + (_mask(),)),
        "fp16_triton": (lambda q, k, v: s.sageattn_qk_int8_pv_fp16_triton(q, k, v, is_causal=True,
                                                                          return_lse=True),
                        lambda: _qkv(dtype=torch.float16)),
        "fp16_cuda": (lambda q, k, v: s.sageattn_qk_int8_pv_fp16_cuda(q, k, v, qk_quant_gran="per_warp",
                                                                      pv_accum_dtype="fp16+fp32",
                                                                      smooth_v=True, return_lse=True),
                      _qkv),
        "fp8_cuda": (lambda q, k, v: s.sageattn_qk_int8_pv_fp8_cuda(q, k, v, pv_accum_dtype="fp32+fp32",
                                                                    smooth_v=True), _qkv),
        "fp8_cuda_sm90": (lambda q, k, v: s.sageattn_qk_int8_pv_fp8_cuda_sm90(q, k, v, "NHD", True),
                          lambda: _qkv("NHD")),
        "sageattn_pv_int8": (lambda q, k, v: s.sageattn(q, k, v, pv_quant_dtype="int8", return_lse=True,
                                                        quant_recipe=(128, 128, -1, 128)), _qkv),
        "ops_pipeline_pv_int8": (_pipeline_int8, lambda: _qkv("NHD")),
        "varlen": (lambda q, k, v, cq, ck: s.sageattn_varlen(q, k, v, cq, ck, 17, 29, is_causal=True),
                   _packed),
        "ops_quantize_qk": (lambda q, k: tuple(ops.quantize_qk(q, k)),
                            lambda: tuple(x.transpose(1, 2) for x in _qkv()[:2])),
        "ops_quantize_qk_fp8_per_tensor": (
            lambda q, k: tuple(ops.quantize_qk(q, k, quant_recipe=(-1, -1, -1, -1), qk_quant_dtype="fp8",
                                               smooth_k=False)[:4]),
            lambda: tuple(x.transpose(1, 2) for x in _qkv()[:2])),
        "ops_quantize_v": (lambda v: tuple(ops.quantize_v(v)), lambda: (_qkv("NHD")[2],)),
        "ops_quantize_v_block": (lambda v: tuple(ops.quantize_v(v, quant_recipe=(128, 128, -1, 128))),
                                 lambda: (_qkv("NHD")[2],)),
        "ops_attention_quantized": (_attention_quantized, _quantized_inputs),
        "ops_pipeline": (_pipeline, lambda: _qkv("NHD")),
    }


def _quantized_inputs() -> tuple[torch.Tensor, ...]:
    q, k, v = _qkv("NHD")
    qk = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v)
    return qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale, qk.k_mean


def _attention_quantized(qc, kc, vc, qs, ks, vs, km):
    return ops.attention_quantized(qc, kc, vc, qs, ks, vs, None, True, return_lse=True, k_mean=km,
                                   out_dtype=torch.float16)


def _pipeline(q, k, v):
    qk = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v)
    return ops.attention_quantized(qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale,
                                   0.2, fp8_output=True, return_lse=True, k_mean=qk.k_mean)


def _pipeline_int8(q, k, v):
    qk = ops.quantize_qk(q, k)
    vq = ops.quantize_v(v, dtype="int8")
    return ops.attention_quantized(qk.q_codes, qk.k_codes, vq.v_codes, qk.q_scale, qk.k_scale, vq.v_scale,
                                   None, True, return_lse=True, k_mean=qk.k_mean)


def test_compile_reads_sageattn_cpu_pv(monkeypatch: pytest.MonkeyPatch) -> None:
    """SAGEATTN_CPU_PV under torch.compile: the traced call runs the mode it names."""
    q, k, v = _qkv()
    monkeypatch.setenv("SAGEATTN_CPU_PV", "int8")
    want = sageattention.sageattn(q, k, v, pv_quant_dtype="int8")
    got = torch.compile(lambda q, k, v: sageattention.sageattn(q, k, v), backend="eager", fullgraph=True)(q, k, v)
    _assert_same(got, want)


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _assert_same(got: Any, want: Any) -> None:
    got, want = _as_tuple(got), _as_tuple(want)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None
            continue
        assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype, w.dtype)
        if w.dtype == torch.float8_e4m3fn:
            assert torch.equal(g.view(torch.uint8), w.view(torch.uint8)), f"output {i} differs"
        else:
            assert torch.equal(g, w), f"output {i} differs (max {ref.max_abs(g.float(), w.float())})"


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph_matches_eager(case: str) -> None:
    fn, make = CASES[case]
    args = make()
    want = fn(*args)
    backend = "aot_eager" if case in ("sageattn", "varlen", "ops_pipeline") else "eager"
    compiled = torch.compile(fn, backend=backend, fullgraph=True)
    _assert_same(compiled(*args), want)
    # a second call hits the cache and is still right
    _assert_same(compiled(*args), want)


def test_compile_inductor_sageattn() -> None:
    q, k, v = _qkv()

    def f(q, k, v):
        # no surrounding pointwise ops: they would make inductor build C++ kernels (slow)
        return sageattention.sageattn(q, k, v, is_causal=True, return_lse=True)

    want = f(q, k, v)
    got = torch.compile(f, fullgraph=True)(q, k, v)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_compile_new_shapes() -> None:
    """A compiled caller sees a new sequence length (recompile or dynamic shapes): still
    the eager result."""
    f = torch.compile(lambda q, k, v: sageattention.sageattn(q, k, v, return_lse=True),
                      backend="eager", fullgraph=True)
    for nq, nk in ((NQ, NK), (NQ + 9, NK + 31), (NQ + 20, NK + 50)):
        q, k, v = _qkv(nq=nq, nk=nk)
        _assert_same(f(q, k, v), sageattention.sageattn(q, k, v, return_lse=True))


def test_compile_in_module() -> None:
    """The shape a client uses: an attention module compiled with fullgraph."""

    class Attn(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = torch.nn.Linear(64, 3 * 64, dtype=torch.bfloat16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b, n, _ = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, 2, 32).unbind(2)
            return sageattention.sageattn(q, k, v, tensor_layout="NHD").reshape(b, n, 64)

    torch.manual_seed(0)
    m = Attn().eval()
    x = ref.randn((2, 40, 64), seed=8)
    with torch.no_grad():
        want = m(x)
        got = torch.compile(m, backend="aot_eager", fullgraph=True)(x)
    _assert_same(got, want)


def _pack_by_key_mask(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                      causal: bool = False) -> torch.Tensor:
    """diffusers' sage_varlen packing (issue 8): (B, N, H, D) inputs, keys of batch b cut
    to `key_mask[b].sum()` with a tensor index, so the packed K/V lengths are unbacked
    symbols under torch.compile, and max_seqlen_k is `.item()` of a tensor."""
    b, nq = q.shape[:2]
    seqlens_k = key_mask.sum(dim=1, dtype=torch.int32)
    cu_q = torch.arange(0, b + 1, dtype=torch.int32) * nq
    cu_k = torch.zeros(b + 1, dtype=torch.int32)
    cu_k[1:] = torch.cumsum(seqlens_k, dim=0)
    max_k = seqlens_k.max().item()
    keys, values = [], []
    for i in range(b):
        keys.append(k[i, :seqlens_k[i]])
        values.append(v[i, :seqlens_k[i]])
    out = sageattention.sageattn_varlen(q.flatten(0, 1), torch.cat(keys), torch.cat(values), cu_q, cu_k, nq,
                                        max_k, causal=causal)
    return out.unflatten(0, (b, -1))


def _key_mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
@pytest.mark.parametrize("causal", [False, True])
def test_compile_varlen_data_dependent_packing(backend: str, causal: bool) -> None:
    q = ref.randn((2, NQ, HQ, D), seed=11)
    k = ref.randn((2, NK, HKV, D), seed=12)
    v = ref.randn((2, NK, HKV, D), seed=13)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = torch.compile(_pack_by_key_mask, backend=backend, fullgraph=True)
        for lengths in ([NK - 7, 13], [NK, NK // 2]):  # new data, same graph
            mask = _key_mask(lengths, NK)
            want = _pack_by_key_mask(q, k, v, mask, causal)
            _assert_same(compiled(q, k, v, mask, causal), want)
            # and the packing did what it says: batch 1 sees only its first keys (varlen
            # quantizes each sequence as the Triton variant does one batch)
            alone = sageattention.sageattn_qk_int8_pv_fp16_triton(
                q[1:], k[1:, :lengths[1]], v[1:, :lengths[1]], tensor_layout="NHD", is_causal=causal)
            assert torch.equal(want[1:], alone)


def test_compile_varlen_data_dependent_mismatch_raises() -> None:
    """The k/v length check the trace could not decide runs in the op: same ValueError."""
    q = ref.randn((NQ, HQ, D), seed=11)
    k = ref.randn((NK, HKV, D), seed=12)
    v = ref.randn((NK, HKV, D), seed=13)
    lengths = torch.tensor([NK - 3, NK - 5])

    def f(q, k, v, lengths):
        cu_q = torch.tensor([0, NQ], dtype=torch.int32)
        cu_k = torch.tensor([0, NK - 3], dtype=torch.int32)
        return sageattention.sageattn_varlen(q, k[: lengths[0]], v[: lengths[1]], cu_q, cu_k, NQ, NK)

    with pytest.raises(ValueError, match=r"k, v: sequence lengths differ \(k=37, v=35\)"):
        f(q, k, v, lengths)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        with pytest.raises(ValueError, match=r"k, v: sequence lengths differ \(k=37, v=35\)"):
            torch.compile(f, backend="eager", fullgraph=True)(q, k, v, lengths)


def _dense_by_lengths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> Any:
    """LightX2V-style dense call: the query and key lengths are read from tensor values
    (`.item()`), so under torch.compile they are unbacked symbols; with smooth_v, whose
    mean is skipped when there is no key, and the LSE of the empty-shape shortcut."""
    nq, nk = int(lengths[0].item()), int(lengths[1].item())
    return sageattention.sageattn_qk_int8_pv_fp8_cuda(q[:, :, :nq], k[:, :, :nk], v[:, :, :nk],
                                                      pv_accum_dtype="fp32+fp32", smooth_v=True, return_lse=True)


def _dense_masked_by_lengths(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor) -> Any:
    """The same with a bool mask cut to the data-dependent query length."""
    nq = int(lengths[0].item())
    mask = (torch.arange(NK) % 3 != 1)[None, None, None, :].expand(B, 1, nq, NK)
    return sageattention.sageattn(q[:, :, :nq], k, v, attn_mask=mask, return_lse=True)


@pytest.mark.parametrize("fn", [_dense_by_lengths, _dense_masked_by_lengths])
def test_compile_dense_data_dependent_lengths(fn: Callable[..., Any]) -> None:
    """fullgraph=True traces the dense path with lengths taken from data: the empty-shape
    shortcut and the mask's shape check decide only what the trace knows (the kernels see
    the real sizes), and each length, empty ones included, gives the eager result."""
    q, k, v = _qkv()
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
        for lengths in ([NQ - 5, NK - 9], [0, NK], [NQ, 0], [NQ, NK]):  # new data, same graph
            t = torch.tensor(lengths)
            got, want = compiled(q, k, v, t), fn(q, k, v, t)
            _assert_same(got, want)


# --------------------------------------------------------------------------- #
# inference_mode / no_grad                                                      #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_inference_mode_and_no_grad(mode: str) -> None:
    ctx = torch.inference_mode if mode == "inference_mode" else torch.no_grad
    for (fn, make) in CASES.values():
        args = make()
        want = fn(*args)
        with ctx():
            args_in = make()  # created inside the mode (inference tensors under inference_mode)
            got = fn(*args_in)
        _assert_same(got, want)


def test_compile_under_inference_mode() -> None:
    fn, make = CASES["sageattn_lse_causal_nhd"]
    want = fn(*make())
    with torch.inference_mode():
        got = torch.compile(fn, backend="aot_eager", fullgraph=True)(*make())
    _assert_same(got, want)


# --------------------------------------------------------------------------- #
# Autograd: forward only                                                        #
# --------------------------------------------------------------------------- #

_GRAD_CASES = ["sageattn", "sageattn_lse_causal_nhd", "sageattn_mask", "fp16_triton", "fp16_cuda",
               "fp8_cuda", "fp8_cuda_sm90", "varlen"]


@pytest.mark.parametrize("which", ["q", "k", "v", "all"])
@pytest.mark.parametrize("case", _GRAD_CASES)
def test_requires_grad_forward_works_backward_raises(case: str, which: str) -> None:
    fn, make = CASES[case]
    args = make()
    want = _as_tuple(fn(*args))
    idx = {"q": [0], "k": [1], "v": [2], "all": [0, 1, 2]}[which]
    grad_args = tuple(a.detach().clone().requires_grad_(i in idx) for i, a in enumerate(args[:3])) + args[3:]
    got = _as_tuple(fn(*grad_args))
    _assert_same(tuple(g.detach() for g in got), want)
    out = got[0]
    assert out.requires_grad, "the output must carry the inputs' autograd state"
    with pytest.raises(RuntimeError, match="forward only"):
        out.float().sum().backward()


@pytest.mark.parametrize("case", ["sageattn", "varlen"])
def test_requires_grad_compiled_without_fullgraph(case: str) -> None:
    fn, make = CASES[case]
    args = make()
    want = fn(*args)
    grad_args = (args[0].detach().clone().requires_grad_(),) + args[1:]
    out = _as_tuple(torch.compile(fn, backend="eager")(*grad_args))[0]
    _assert_same(out.detach(), want)
    with pytest.raises(RuntimeError, match="forward only"):
        out.float().sum().backward()


@pytest.mark.parametrize("case", ["sageattn", "fp16_triton", "varlen", "sageattn_mask"])
def test_requires_grad_compiled_fullgraph(case: str) -> None:
    fn, make = CASES[case]
    args = make()
    want = fn(*args)
    grad_args = (args[0].detach().clone().requires_grad_(),) + args[1:]
    out = _as_tuple(torch.compile(fn, backend="eager", fullgraph=True)(*grad_args))[0]
    _assert_same(out.detach(), _as_tuple(want)[0])
    with pytest.raises(RuntimeError, match="forward only"):
        out.float().sum().backward()


def test_no_grad_inputs_give_plain_tensor() -> None:
    q, k, v = _qkv()
    out = sageattention.sageattn(q, k, v)
    assert not out.requires_grad and out.grad_fn is None
    with torch.no_grad():
        out = sageattention.sageattn(q.requires_grad_(), k, v)
    assert not out.requires_grad
