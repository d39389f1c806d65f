"""Real clients calling sageattention the way they do in the wild.

- diffusers: tiny Flux and Wan transformers built from config (no download), run in bf16
  with ``set_attention_backend("sage")`` and with the default (native SDPA) backend. A
  counting wrapper, installed where diffusers looks the name up
  (``diffusers.models.attention_dispatch.sageattn``), proves that our ``sageattn`` ran,
  and checks every call against fp32 SDPA on the very tensors diffusers passed.
- ComfyUI: ``attention_sage``-style calls, NHD views carved from (B, S, H*D) activations
  (contiguous, and column slices of a fused QKV projection), with and without ``attn_mask``.

The diffusers tests skip only when diffusers is not installed.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import pytest
import torch
import torch.nn.functional as F

import sageattention
from sageattention import sageattn

SDPA_COS_BAR = 0.99  # docs/CONTRACT.md §5: quantized attention vs fp32 attention
MODEL_COS_BAR = 0.9995  # end-to-end model output, sage vs native backend
# Relative L2 error of the whole model output. Sage lands near 0.005 on these models;
# replacing attention by zeros moves Flux by ~0.07 and Wan by ~0.10, so this bar would
# catch an attention that is silently wrong, not only one that is missing.
MODEL_REL_L2_BAR = 0.02


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _sdpa_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layout: str, is_causal: bool = False,
               sm_scale: Optional[float] = None, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """fp32 SDPA in the caller's layout (GQA by repeating kv heads)."""
    if layout == "NHD":
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    q, k, v = (t.float() for t in (q, k, v))
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    if attn_mask is not None and attn_mask.is_floating_point():
        attn_mask = attn_mask.float()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=sm_scale)
    return out.transpose(1, 2) if layout == "NHD" else out


# ---------------------------------------------------------------------------------------
# diffusers
# ---------------------------------------------------------------------------------------
def _require_diffusers() -> None:
    """Skip when diffusers is absent, or installed but unable to import beside this torch
    (diffusers 0.42 needs torch.accelerator, which torch < 2.6 lacks); the reason names
    both versions. With the pinned torch of CI it imports, so these tests run there."""
    try:
        import diffusers.models.attention_dispatch  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] == "diffusers":
            pytest.skip("diffusers is not installed")
        raise
    except Exception as e:  # AttributeError/ImportError from diffusers' torch feature probes
        from importlib.metadata import version

        pytest.skip(f"diffusers {version('diffusers')} does not import with torch {torch.__version__}: "
                    f"{type(e).__name__}: {e}")


class _CountingSageattn:
    """Stands in for ``sageattention.sageattn`` inside diffusers: counts the calls and
    checks each against fp32 SDPA on the same inputs."""

    def __init__(self) -> None:
        self.calls: List[Dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = sageattention.sageattn(*args, **kwargs)
        names = ("q", "k", "v", "tensor_layout", "is_causal", "sm_scale", "return_lse")
        bound = dict(zip(names, args), **kwargs)
        q, k, v = bound["q"], bound["k"], bound["v"]
        layout = bound.get("tensor_layout", "HND")
        out = result[0] if isinstance(result, tuple) else result
        want = _sdpa_fp32(q, k, v, layout, bool(bound.get("is_causal", False)), bound.get("sm_scale"))
        seq_axis = 1 if layout == "NHD" else 2
        self.calls.append({
            "layout": layout,
            "dtype": q.dtype,
            "head_dim": q.shape[-1],
            "nq": q.shape[seq_axis],
            "nk": k.shape[seq_axis],
            "cos": _cos(out, want),
        })
        return result


@pytest.fixture
def diffusers_sage(monkeypatch: pytest.MonkeyPatch) -> _CountingSageattn:
    """diffusers' sage backend with our sageattn behind a counter; the global backend
    that ``set_attention_backend`` writes is restored afterwards."""
    _require_diffusers()
    import diffusers.models.attention_dispatch as ad

    # diffusers enables "sage" only if `from sageattention import sageattn, ...` (six
    # upstream names) succeeded at its import and the distribution is >= 2.1.1.
    assert ad._CAN_USE_SAGE_ATTN, "diffusers could not import sageattention (see test_diffusers_finds_sageattention)"
    assert ad.sageattn is sageattention.sageattn
    registry = ad._AttentionBackendRegistry
    # set_attention_backend() also sets diffusers' process-wide active backend: put it back.
    monkeypatch.setattr(registry, "_active_backend", registry._active_backend)
    # DIFFUSERS_ATTN_CHECKS=1 would add debugging constraints, one of them "device is
    # CUDA"; they are off by default and pinned off here so the environment cannot flip them.
    monkeypatch.setattr(registry, "_checks_enabled", False)
    counter = _CountingSageattn()
    monkeypatch.setattr(ad, "sageattn", counter)
    return counter


def _n_attention_modules(model: torch.nn.Module) -> int:
    from diffusers.models.attention import AttentionModuleMixin

    return sum(isinstance(m, AttentionModuleMixin) for m in model.modules())


def _compare_backends(model: Any, run: Callable[[], torch.Tensor],
                      counter: _CountingSageattn) -> List[Dict[str, Any]]:
    model.set_attention_backend("native")  # diffusers' default backend (torch SDPA)
    with torch.no_grad():
        ref = run()
    assert counter.calls == [], "the native backend must not call sageattn"

    model.set_attention_backend("sage")
    with torch.no_grad():
        out = run()
    calls = list(counter.calls)
    assert len(calls) == _n_attention_modules(model), f"sageattn called {len(calls)} times"
    for c in calls:
        assert c["layout"] == "NHD" and c["dtype"] == torch.bfloat16, c
        assert c["cos"] > SDPA_COS_BAR, c

    assert out.dtype == ref.dtype == torch.bfloat16 and out.shape == ref.shape
    assert torch.isfinite(out).all()
    cos, rel = _cos(out, ref), _rel_l2(out, ref)
    assert cos > MODEL_COS_BAR, f"model output cosine sage vs native {cos:.6f}"
    assert rel < MODEL_REL_L2_BAR, f"model output relative L2 sage vs native {rel:.4f}"
    return calls


def test_diffusers_finds_sageattention() -> None:
    """diffusers' import-time gate: version >= 2.1.1 and all six upstream names import."""
    _require_diffusers()
    import diffusers.models.attention_dispatch as ad
    from diffusers.utils import is_sageattention_available, is_sageattention_version

    assert is_sageattention_available()
    assert is_sageattention_version(">=", "2.1.1")
    assert ad._CAN_USE_SAGE_ATTN
    assert ad.sageattn is sageattention.sageattn


def test_diffusers_flux_tiny(diffusers_sage: _CountingSageattn) -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model: Any = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
    )
    model = model.to(torch.bfloat16).eval()

    g = torch.Generator().manual_seed(1)
    b, h, w, n_txt = 2, 6, 8, 7
    hidden = torch.randn(b, h * w, 4, generator=g).to(torch.bfloat16)
    text = torch.randn(b, n_txt, 32, generator=g).to(torch.bfloat16)
    pooled = torch.randn(b, 32, generator=g).to(torch.bfloat16)
    timestep = torch.tensor([0.3, 0.7], dtype=torch.bfloat16)
    img_ids = torch.zeros(h * w, 3)
    img_ids[:, 1] = torch.arange(h).repeat_interleave(w)
    img_ids[:, 2] = torch.arange(w).repeat(h)
    txt_ids = torch.zeros(n_txt, 3)

    def run() -> torch.Tensor:
        return model(hidden_states=hidden, encoder_hidden_states=text, pooled_projections=pooled,
                     timestep=timestep, img_ids=img_ids, txt_ids=txt_ids, return_dict=False)[0]

    calls = _compare_backends(model, run, diffusers_sage)
    # joint (text + image) attention in both the double- and the single-stream block
    assert all(c["head_dim"] == 16 and c["nq"] == c["nk"] == h * w + n_txt for c in calls), calls


def test_diffusers_wan_tiny(diffusers_sage: _CountingSageattn) -> None:
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    model: Any = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=1, rope_max_seq_len=32,
    )
    model = model.to(torch.bfloat16).eval()

    g = torch.Generator().manual_seed(2)
    frames, height, width, n_txt = 2, 8, 8, 9
    video = torch.randn(1, 4, frames, height, width, generator=g).to(torch.bfloat16)
    text = torch.randn(1, n_txt, 16, generator=g).to(torch.bfloat16)
    timestep = torch.tensor([500])

    def run() -> torch.Tensor:
        return model(hidden_states=video, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0]

    calls = _compare_backends(model, run, diffusers_sage)
    n_video = frames * (height // 2) * (width // 2)
    assert all(c["head_dim"] == 12 for c in calls), calls
    # one self-attention over the video tokens, one cross-attention onto the text tokens
    assert sorted((c["nq"], c["nk"]) for c in calls) == [(n_video, n_txt), (n_video, n_video)], calls


@pytest.mark.parametrize("backend", ["eager", "aot_eager"])
def test_diffusers_sage_varlen_compiled_fullgraph(backend: str) -> None:
    """diffusers' sage_varlen backend packs keys by `key[b, :seqlens_k[b]]` (issue 8): under
    torch.compile(fullgraph=True) it traces, matches eager bitwise and masked SDPA."""
    _require_diffusers()
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    g = torch.Generator().manual_seed(21)
    q, k, v = (torch.randn(2, n, 2, 32, generator=g).to(torch.bfloat16) for n in (16, 40, 40))
    key_mask = torch.arange(40)[None, :] < torch.tensor([33, 9])[:, None]

    def run(q, k, v, key_mask):
        return dispatch_attention_fn(q, k, v, attn_mask=key_mask, backend="sage_varlen")

    want = run(q, k, v, key_mask)
    with torch._dynamo.config.patch(capture_scalar_outputs=True):
        torch._dynamo.reset()
        try:
            got = torch.compile(run, backend=backend, fullgraph=True)(q, k, v, key_mask)
        finally:
            torch._dynamo.reset()
    assert torch.equal(got, want)
    assert _cos(want, _sdpa_fp32(q, k, v, "NHD", attn_mask=key_mask[:, None, None, :])) > 0.999


# ---------------------------------------------------------------------------------------
# ComfyUI
# ---------------------------------------------------------------------------------------

def _comfy_attention_sage(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """What ComfyUI's ``attention_sage`` does with (B, S, H*D) activations: view them as
    NHD, lift a 2-D/3-D mask to 4-D, call sageattn with ``attn_mask=``, flatten back."""
    b, _, inner = q.shape
    dim_head = inner // heads
    q, k, v = (t.view(b, -1, heads, dim_head) for t in (q, k, v))
    if mask is not None:
        if mask.ndim == 2:
            mask = mask.unsqueeze(0)
        if mask.ndim == 3:
            mask = mask.unsqueeze(1)
    out = sageattn(q, k, v, attn_mask=mask, is_causal=False, tensor_layout="NHD")
    return out.reshape(b, -1, heads * dim_head)


def _comfy_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int,
                mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    b, _, inner = q.shape
    q, k, v = (t.float().view(b, -1, heads, inner // heads).transpose(1, 2) for t in (q, k, v))
    if mask is not None:
        mask = mask.float() if mask.is_floating_point() else mask
        while mask.ndim < 4:
            mask = mask.unsqueeze(0) if mask.ndim == 2 else mask.unsqueeze(1)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, inner)


def _activations(b: int, s_q: int, s_k: int, heads: int, dim_head: int, fused: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    inner = heads * dim_head
    if fused:  # self-attention through one QKV projection: q, k, v are column slices
        qkv = torch.randn(b, s_q, 3 * inner, generator=g).to(torch.bfloat16)
        q, k, v = qkv.chunk(3, dim=-1)
        assert not q.is_contiguous()
        return q, k, v
    q = torch.randn(b, s_q, inner, generator=g).to(torch.bfloat16)
    k = torch.randn(b, s_k, inner, generator=g).to(torch.bfloat16)
    v = torch.randn(b, s_k, inner, generator=g).to(torch.bfloat16)
    return q, k, v


@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused_qkv"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_comfyui_nhd_views(fused: bool, dtype: torch.dtype) -> None:
    b, s_q, s_k, heads, dim_head = 2, 77, 77 if fused else 150, 3, 40
    q, k, v = (t.to(dtype) for t in _activations(b, s_q, s_k, heads, dim_head, fused, seed=3))
    out = _comfy_attention_sage(q, k, v, heads)
    assert out.shape == (b, s_q, heads * dim_head) and out.dtype == dtype

    want = _comfy_sdpa(q, k, v, heads)
    assert _cos(out, want) > SDPA_COS_BAR
    # the strided views are read in place: same result as contiguous HND copies
    qh, kh, vh = (t.reshape(b, -1, heads, dim_head).transpose(1, 2).contiguous() for t in (q, k, v))
    same = sageattn(qh, kh, vh, tensor_layout="HND").transpose(1, 2).reshape(b, -1, heads * dim_head)
    assert _cos(out, same) > 0.9999
    torch.testing.assert_close(out.float(), same.float(), atol=2e-2, rtol=0)


def _comfy_masks(b: int, s_q: int, s_k: int, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    keep = torch.ones(b, s_k, dtype=torch.bool)  # key padding: batch 0 keeps 100, batch 1 keeps 37
    keep[0, 100:] = False
    keep[1, 37:] = False
    pad_bool_3d = keep[:, None, :].expand(b, s_q, s_k)
    neg_inf = torch.zeros(b, s_q, s_k, dtype=torch.bfloat16).masked_fill(~pad_bool_3d, float("-inf"))
    bias_2d = (2.0 * torch.randn(s_q, s_k, generator=g)).to(torch.bfloat16)
    # ComfyUI's own float masks: -finfo(dtype).max where hidden (issue 8). The last queries
    # of batch 0 hide every key: SDPA gives them the mean of V, not zeros.
    hide_rows = pad_bool_3d.clone()
    hide_rows[0, -5:] = False
    finfo_masks = {
        f"float_3d_finfo_max_{name}": torch.zeros(b, s_q, s_k, dtype=dt).masked_fill(~hide_rows, -torch.finfo(dt).max)
        for name, dt in (("bf16", torch.bfloat16), ("fp16", torch.float16))
    }
    return {
        "bool_3d_padding": pad_bool_3d,
        "float_3d_neginf": neg_inf,
        "float_2d_bias": bias_2d,
        "bool_4d": keep[:, None, None, :],
        **finfo_masks,
    }


@pytest.mark.parametrize("kind", ["bool_3d_padding", "float_3d_neginf", "float_2d_bias", "bool_4d",
                                  "float_3d_finfo_max_bf16", "float_3d_finfo_max_fp16"])
def test_comfyui_attn_mask(kind: str) -> None:
    b, s_q, s_k, heads, dim_head = 2, 64, 130, 2, 32
    q, k, v = _activations(b, s_q, s_k, heads, dim_head, fused=False, seed=4)
    mask = _comfy_masks(b, s_q, s_k, seed=5)[kind]

    out = _comfy_attention_sage(q, k, v, heads, mask=mask)
    unmasked = _comfy_attention_sage(q, k, v, heads)
    want = _comfy_sdpa(q, k, v, heads, mask=mask)
    assert _cos(unmasked, want) < 0.98, "test inputs: the mask must change the result"
    assert _cos(out, want) > SDPA_COS_BAR, f"masked sageattn vs masked SDPA: cosine {_cos(out, want):.5f}"
    if "finfo_max" in kind:  # the rows that hide every key: SDPA's answer, not zeros
        hidden, want_hidden = out[0, -5:], want[0, -5:]
        assert hidden.abs().amax() > 0.05, "fully covered rows came back empty"
        assert _cos(hidden, want_hidden) > SDPA_COS_BAR, _cos(hidden, want_hidden)
