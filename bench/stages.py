"""Where a call's time goes: quantize, pack, Q·K, softmax, P·V.

- quantize: measured, the package's own quantizers (``sageattention.ops``) on the
  call's inputs, against the time of the whole ``sageattn`` call;
- the rest of the call (the attention core) is split in proportion to the per-tile
  costs the C++ tile harness (tests/cpp/bench_tile_ops.cc) reports for the ISA path in
  use: pack (K and V tile packing, streamed from a strided tensor), qk, softmax, pv.
  That split is a model: the harness times each stage on a 128-query × 128-key tile (the core's), and
  the loop packs a K and V tile once per QUERY_ROWS_PER_KV_PACK query rows. The
  harness's raw output is kept in the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field

TILE_STAGES = ("pack", "qk", "softmax", "pv")
HARNESS_TILE_ROWS = 128  # query rows of the harness's tile (tests/cpp/bench_tile_ops.cc)
# How many query rows share one packed K / V tile in csrc/core/attention.cc.
# None: K and V are packed once per (batch, kv head), shared by all query rows, which is
# what the core does whenever the packed head fits its 32 MiB budget (every shape the
# benchmark runs; longer heads fall back to a pack per 128 query rows).
QUERY_ROWS_PER_KV_PACK: int | None = None


def kv_pack_weight(seq_len_q: int) -> float:
    """K/V packs per harness tile step (128 query rows) for a call with `seq_len_q` rows."""
    rows = QUERY_ROWS_PER_KV_PACK if QUERY_ROWS_PER_KV_PACK is not None else seq_len_q
    return HARNESS_TILE_ROWS / max(min(rows, seq_len_q), 1)


@dataclass
class TileCosts:
    """Microseconds per 128×128 tile step, one ISA path, one head dim, one P·V mode
    (pack: one K and one V tile pack, unweighted)."""

    isa_path: str
    head_dim: int
    pv_mode: str
    us: dict[str, float] = field(default_factory=dict)

    def shares(self, seq_len_q: int) -> dict[str, float]:
        """Each stage's share of a tile step of a call with `seq_len_q` query rows."""
        weighted = {k: v * (kv_pack_weight(seq_len_q) if k == "pack" else 1.0) for k, v in self.us.items()}
        total = sum(weighted.values())
        return {k: v / total for k, v in weighted.items()} if total > 0 else {}


def tile_costs(parsed: dict[str, dict[str, float]], isa_path: str, head_dim: int, pv_mode: str
               ) -> TileCosts | None:
    """Pick the stages of `isa_path` out of the harness's parsed output (see native.py).

    Q·K comes from the int8 line ("<isa> int8 d=D"), softmax / P·V from the "dv=D" line
    (the one naming `pv_mode` when the harness prints one per mode; a mode other than
    fp8 needs its own line), packing from the strided-streaming line when present.
    """
    lines = {label: costs for label, costs in parsed.items() if label.split()[:1] == [isa_path]}
    qk_line = next((c for lbl, c in lines.items() if "int8" in lbl.split() and f"d={head_dim}" in lbl.split()), None)
    pv_lines = {lbl: c for lbl, c in lines.items() if f"dv={head_dim}" in lbl.split()}
    named = [c for lbl, c in pv_lines.items() if pv_mode in lbl.split()]
    if named:
        pv_line = named[0]
    elif pv_mode == "fp8" and pv_lines:
        pv_line = next(iter(pv_lines.values()))
    else:
        return None
    if qk_line is None or "qk" not in qk_line or "pv" not in pv_line or "softmax" not in pv_line:
        return None
    stream = next((c for lbl, c in lines.items() if "streaming" in lbl), {})
    pack_k = stream.get("pack_k(int8)", qk_line.get("pack_k", 0.0))
    # The streaming line packs fp8 V; another mode's V pack comes from its own line.
    pack_v = stream.get("pack_v", pv_line.get("pack_v", 0.0)) if pv_mode == "fp8" else pv_line.get("pack_v", 0.0)
    return TileCosts(isa_path, head_dim, pv_mode, {
        "pack": pack_k + pack_v, "qk": qk_line["qk"], "softmax": pv_line["softmax"], "pv": pv_line["pv"]})


@dataclass
class StageSplit:
    """One call's time: quantize measured, the rest apportioned by the tile costs."""

    label: str
    seq_len_q: int
    pv_mode: str
    threads: int
    call_ms: float
    quantize_ms: float | None
    tile: TileCosts | None

    def split_ms(self) -> dict[str, float | None]:
        core = self.call_ms - (self.quantize_ms or 0.0)
        shares = self.tile.shares(self.seq_len_q) if self.tile else {}
        out: dict[str, float | None] = {"quantize": self.quantize_ms}
        for stage in TILE_STAGES:
            out[stage] = core * shares[stage] if stage in shares else None
        return out
