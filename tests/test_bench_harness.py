"""The benchmark's own arithmetic and plumbing (bench/): per-path ceilings, the stage
split's parsing of the C++ tile harness, and the out-of-library peak probes.

Nothing is timed against a target here; figures only have to be sane (positive, the
best of the repeats, the right units picked by the ceiling table).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_cpu  # noqa: E402
import ceilings  # noqa: E402
import machine  # noqa: E402
import native  # noqa: E402
import stages  # noqa: E402


class FakeProbes:
    """Probe figures by kind; each measurement returns the next figure of its list."""

    def __init__(self, figures: dict, unsupported: tuple = ()) -> None:
        self.figures = {k: list(v) for k, v in figures.items()}
        self.unsupported = unsupported

    def kinds(self) -> list:
        return list(self.figures) + list(self.unsupported)

    def supported(self, kind: str) -> bool:
        return kind in self.figures

    def measure_gops(self, kind: str, threads: int, seconds: float) -> float:
        return self.figures[kind].pop(0) * threads


def test_harmonic_ceiling_of_equal_op_counts() -> None:
    assert ceilings.harmonic_ceiling(930.0, 230.0) == pytest.approx(2 / (1 / 930 + 1 / 230))
    assert ceilings.harmonic_ceiling(500.0, 500.0) == pytest.approx(500.0)


def test_ceilings_use_the_best_repeat_and_the_units_of_each_mode() -> None:
    qk, pv = ceilings.CEILING_UNITS[("avx512", "fp8")]
    int8_qk, int8_pv = ceilings.CEILING_UNITS[("avx512", "int8")]
    assert int8_qk == int8_pv == qk  # int8 P·V runs on the Q·Kᵀ unit
    # Two thread counts x three repeats, round-robin: per kind the figures of (rep, threads).
    probes = FakeProbes({qk: [400, 380, 450, 460, 300, 310], pv: [100, 90, 110, 120, 80, 70]},
                        unsupported=("avx_vnni_vpdpbusd",))
    results = ceilings.run_probes(probes, [1, 2], 0.01, 3)
    by_kind = {r.kind: r for r in results}
    assert by_kind[qk].gops(1) == 450 and by_kind[qk].gops(2) == 920
    assert by_kind[pv].gops(1) == 110 and by_kind[pv].gops(2) == 240
    assert not by_kind["avx_vnni_vpdpbusd"].samples_by_threads
    found = ceilings.ceilings_for("avx512", ["fp8", "int8"], results)
    assert found["fp8"].gops_by_threads[2] == pytest.approx(ceilings.harmonic_ceiling(920, 240))
    assert found["int8"].gops_by_threads[1] == pytest.approx(450)


def test_a_path_without_entry_or_probe_has_no_ceiling() -> None:
    results = ceilings.run_probes(FakeProbes({"avx2_vpmaddwd": [100]}), [1], 0.01, 1)
    found = ceilings.ceilings_for("avx2", ["fp8"], results)
    assert not found["fp8"].gops_by_threads and "avx2_fma_fp32" in found["fp8"].note
    assert not ceilings.ceilings_for("scalar", ["fp8"], results)["fp8"].gops_by_threads


HARNESS_OUTPUT = """\
avx2   int8 d=64: pack_q   0.15 us  pack_k   0.17 us  qk    4.00 us ( 62.3 GMAC/s)
avx2   fp8  d=64: pack_q   0.40 us  pack_k   0.80 us  qk    9.00 us ( 55.5 GMAC/s)
avx2   streaming from a strided 4096-key tensor: pack_v   1.00 us  pack_k(int8)   0.50 us
avx2   fp8  P·V dv=64: softmax   2.00 us  pack_v   0.49 us  pv    4.50 us ( 57.1 GMAC/s)
avx2   int8 P·V dv=64: softmax   2.50 us  pack_v   0.30 us  pv    3.00 us ( 85.0 GMAC/s)
avx512: not available on this CPU, skipped
"""


def test_tile_costs_from_the_harness_output(tmp_path: Path) -> None:
    script = tmp_path / "fake_harness.sh"
    script.write_text("#!/bin/sh\ncat <<'END'\n" + HARNESS_OUTPUT + "END\n")
    script.chmod(0o755)
    raw, parsed = native.run_tile_harness(script, 64, 1)
    assert raw == HARNESS_OUTPUT
    fp8 = stages.tile_costs(parsed, "avx2", 64, "fp8")
    assert fp8 is not None
    assert fp8.us == pytest.approx({"pack": 1.5, "qk": 4.0, "softmax": 2.0, "pv": 4.5})
    int8 = stages.tile_costs(parsed, "avx2", 64, "int8")  # its own line, its own V pack
    assert int8 is not None
    assert int8.us == pytest.approx({"pack": 0.8, "qk": 4.0, "softmax": 2.5, "pv": 3.0})
    assert stages.tile_costs(parsed, "avx2", 64, "16bit") is None  # no line for the mode: n/a
    assert stages.tile_costs(parsed, "avx512", 64, "fp8") is None
    assert stages.tile_costs(parsed, "avx2", 128, "fp8") is None


def test_stage_split_adds_up_to_the_call() -> None:
    tile = stages.TileCosts("avx2", 64, "fp8", {"pack": 1.0, "qk": 4.0, "softmax": 2.0, "pv": 4.5})
    split = stages.StageSplit("N=8192", 8192, "fp8", 2, call_ms=120.0, quantize_ms=20.0, tile=tile)
    parts = split.split_ms()
    assert sum(parts.values()) == pytest.approx(120.0)
    weight = stages.kv_pack_weight(8192)
    assert parts["qk"] / parts["pv"] == pytest.approx(4.0 / 4.5)
    assert parts["pack"] / parts["qk"] == pytest.approx(weight * 1.0 / 4.0)
    assert stages.StageSplit("x", 64, "int8", 1, 5.0, None, None).split_ms()["pv"] is None


@pytest.mark.skipif(shutil.which("cmake") is None, reason="cmake is not installed (needed to build bench/probe)")
def test_probe_library_builds_and_measures(tmp_path: Path) -> None:
    probes = native.load_probes(tmp_path / "probe")
    assert not isinstance(probes, native.Unavailable), probes
    kinds = probes.kinds()
    assert set(kinds) >= {k for units in ceilings.CEILING_UNITS.values() for k in units}
    for kind in kinds:
        if probes.supported(kind):
            assert probes.measure_gops(kind, 1, 0.02) > 0
    with pytest.raises(RuntimeError, match="unknown kind 'nope'"):
        probes.measure_gops("nope", 1, 0.02)
    supported = next((k for k in kinds if probes.supported(k)), None)
    if supported is not None:
        with pytest.raises(RuntimeError, match="num_threads"):
            probes.measure_gops(supported, 0, 0.02)
        with pytest.raises(RuntimeError, match="seconds"):
            probes.measure_gops(supported, 1, -1.0)


@pytest.mark.parametrize("family, model, name", [
    (25, 0x11, "Zen 4"), (25, 0x10, "Zen 4"), (25, 0x1F, "Zen 4"), (25, 0x61, "Zen 4"), (25, 0x7F, "Zen 4"),
    (25, 0xA0, "Zen 4"), (25, 0xAF, "Zen 4"),
    (25, 0x01, "Zen 3"), (25, 0x21, "Zen 3"), (25, 0x2F, "Zen 3"), (25, 0x44, "Zen 3"), (25, 0x50, "Zen 3"),
    (26, 0x02, "Zen 5"), (26, 0x44, "Zen 5"),
    (25, 0x30, None), (25, 0x80, None), (25, 0xB0, None), (23, 0x31, None), (24, 0x00, None),
])
def test_amd_microarch_from_family_and_model(family: int, model: int, name: str | None) -> None:
    assert machine.cpu_microarch("AuthenticAMD", str(family), str(model)) == name


def test_microarch_only_for_amd_and_well_formed_fields() -> None:
    assert machine.cpu_microarch("GenuineIntel", "6", "143") is None
    assert machine.cpu_microarch("AuthenticAMD", "?", "17") is None
    assert machine.cpu_microarch("AuthenticAMD", "25", "") is None


def test_report_header_names_the_microarch_when_known() -> None:
    m = {"cpu_family_model": "family 25 model 17", "cpu_microarch": "Zen 4"}
    assert bench_cpu.cpu_identity(m) == "Zen 4, family 25 model 17"
    assert bench_cpu.cpu_identity({**m, "cpu_microarch": None}) == "family 25 model 17"
