"""What crosses the C ABI into the core (issue 12 item 1).

- No float8 dtype ever reaches TVM-FFI: torch before 2.7 cannot export float8 through
  DLPack, so fp8 codes and fp8 outputs must cross as uint8 views. A spy stands in for the
  loaded library and fails on any float8 tensor argument.
- Importing sageattention never builds TVM-FFI's optional torch add-on (a libtorch
  extension that tvm_ffi compiles on first import for torch versions without a native
  DLPack exchange API).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

import pytest
import torch

import sageattention
from sageattention import _lib, ops, sageattn, sageattn_varlen

FP8_DTYPES = {getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz")
              if hasattr(torch, n)}


class _Spy:
    """Forwards to the real library; records the dtype of every tensor argument and
    raises on a float8 one (so the call fails loudly, as DLPack would on old torch)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.seen: list[tuple[str, torch.dtype]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self.raw, name)

        def call(*args: Any) -> Any:
            for a in args:
                if isinstance(a, torch.Tensor):
                    if a.dtype in FP8_DTYPES:
                        raise AssertionError(f"{name}: a {a.dtype} tensor reached the C ABI")
                    self.seen.append((name, a.dtype))
            return fn(*args)

        return call


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    s = _Spy(_lib.module()._raw)
    wrapped = _lib._CoreModule(s)
    monkeypatch.setattr(_lib, "module", lambda: wrapped)
    return s


def _qkv(b: int = 1, n: int = 80, h: int = 2, d: int = 32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    return tuple(torch.randn((b, h, n, d), generator=g).to(torch.bfloat16) for _ in range(3))


def test_public_fp8_paths_cross_as_uint8(spy: _Spy) -> None:
    q, k, v = _qkv()
    for recipe in [(-1, -1, -1, -1), (128, 16, -1, 1), (128, 128, -1, 128)]:
        out, out_scale, lse = sageattn(q, k, v, qk_quant_dtype="fp8", quant_recipe=recipe, fp8_output=True,
                                       return_lse=True)
        assert out.dtype == torch.float8_e4m3fn and bool(torch.isfinite(out.float()).all())
    sageattention.sageattn_qk_int8_pv_fp8_cuda(q, k, v, is_causal=True)
    calls = {name for name, dt in spy.seen if dt == torch.uint8}
    # fp8 codes went in as uint8 (quantizers' outputs and attention's inputs and output)
    assert {"quantize_tokens", "quantize_channels", "attention_forward"} <= calls, spy.seen


def test_low_level_fp8_paths_cross_as_uint8(spy: _Spy) -> None:
    q, k, v = (x.transpose(1, 2) for x in _qkv())
    qq = ops.quantize_qk(q, k, qk_quant_dtype="fp8")
    qv = ops.quantize_v(v)
    assert qq.q_codes.dtype == torch.float8_e4m3fn and qv.v_codes.dtype == torch.float8_e4m3fn
    o8, s8 = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale,
                                     None, fp8_output=True, k_mean=qq.k_mean)
    ref_out = ops.attention_quantized(qq.q_codes, qq.k_codes, qv.v_codes, qq.q_scale, qq.k_scale, qv.v_scale,
                                      None, k_mean=qq.k_mean, out_dtype=torch.float32)
    # the fp8 output written through the uint8 view decodes to the 32-bit result
    torch.testing.assert_close(o8.float() * s8, ref_out, rtol=0.07, atol=1e-3)
    assert any(name == "attention_forward" and dt == torch.uint8 for name, dt in spy.seen)


def test_varlen_and_int8_paths_pass_no_fp8(spy: _Spy) -> None:
    q, k, v = (x[0].transpose(0, 1).contiguous() for x in _qkv())
    cu = torch.tensor([0, 30, 80], dtype=torch.int32)
    sageattn_varlen(q, k, v, cu, cu, 50, 50)
    sageattn(*_qkv())
    assert spy.seen


def _fresh_import(env_extra: dict[str, str], cache_dir: str) -> dict[str, Any]:
    code = r"""
import json, os, subprocess, sys
builds = []
real_run = subprocess.run
def run(args, *a, **kw):  # tvm_ffi builds its torch add-on through subprocess.run
    builds.append([str(x) for x in args])
    return real_run(args, *a, **kw)
subprocess.run = run
import torch, sageattention
q = torch.randn(1, 2, 40, 32, dtype=torch.bfloat16)
out, _ = sageattention.sageattn(q, q, q, qk_quant_dtype="fp8", fp8_output=True)
addon = sys.modules.get("tvm_ffi._optional_torch_c_dlpack")
print(json.dumps({"builds": builds, "addon_loader_ran": hasattr(addon, "_LIB"),
                  "switch_left": os.environ.get("TVM_FFI_DISABLE_TORCH_C_DLPACK"),
                  "cache": sorted(os.listdir(os.environ["TVM_FFI_CACHE_DIR"]))}))
"""
    env = {k: v for k, v in os.environ.items() if k != "TVM_FFI_DISABLE_TORCH_C_DLPACK"}
    env.update(env_extra, TVM_FFI_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_first_import_never_builds_the_torch_addon(tmp_path: Any) -> None:
    got = _fresh_import({}, str(tmp_path))
    assert got["builds"] == [], got
    assert got["cache"] == [], got
    assert not got["addon_loader_ran"], "tvm_ffi's torch add-on loader ran during `import sageattention`"
    assert got["switch_left"] is None, "the add-on switch leaked into the environment"


def test_caller_can_keep_the_torch_addon(tmp_path: Any) -> None:
    """TVM_FFI_DISABLE_TORCH_C_DLPACK=0, set by the caller, is respected: the loader runs.
    (It builds nothing on a torch that exports the DLPack exchange API itself.)"""
    if not hasattr(torch.Tensor, "__dlpack_c_exchange_api__") and not hasattr(torch.Tensor,
                                                                              "__c_dlpack_exchange_api__"):
        pytest.skip("this torch lacks the native DLPack exchange API: keeping the add-on would compile it")
    got = _fresh_import({"TVM_FFI_DISABLE_TORCH_C_DLPACK": "0"}, str(tmp_path))
    assert got["addon_loader_ran"] and got["switch_left"] == "0", got
