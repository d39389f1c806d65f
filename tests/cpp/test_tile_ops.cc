// Unit tests of the SIMD tile operations against the scalar reference (kernels_scalar.cc).
//
// For every ISA the running CPU has (others are skipped, saying why) and for the AVX2
// emulation of the AVX-512 traits (emu512.h), random tiles of many shapes go through
// every TileOps function and are compared with scalar_tile_ops():
//   pack + qk   int8: bit-exact; fp8: within 1e-6 of Σ|q·k| (scaled);
//   softmax     m exact, l and alpha within 1e-6 relative, P bit-equal except where
//               448·p lies within 1e-6 (relative) of an fp8 rounding boundary;
//   pack_v      bit-exact (all 256 codes, NaN included);
//   pv          within 1e-5 of Σ|terms| (fp32 reassociation);
//   int8 P·V    pack_v + pv bit-exact, softmax codes exact up to rounding boundaries
//               (see test_int8_pv_tile / test_int8_softmax);
// plus guards around every output (no write past nk / dv / the packed-size budget that
// attention.cc allocates), -inf and fully masked rows, int8 -128 codes, exp2 accuracy
// (<= 2 ulp over [-150, 63]) and fp8 rounding of boundary values (bit-exact).
// No framework: prints failures, ends with "N passed, M failed", exits non-zero on any.
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "sageattn/attention.h"
#include "sageattn/isa.h"
#include "sageattn/numeric.h"
#include "sageattn/tile_ops.h"

#if defined(SAGEATTN_TEST_HAVE_EMU512)  // tests/cpp/emu512_ops.cc (x86 builds)
namespace sageattn {
const TileOps& emu512_tile_ops();
const TileOps& emu512_bf16_tile_ops();
namespace simd_test {
void dpbf16_emu512(const float* acc, const uint32_t* a, const uint32_t* b, float* out, int n);
bool dpbf16_real(const float* acc, const uint32_t* a, const uint32_t* b, float* out, int n);
// op: 0 exp2, 1 fp8 rounding, 2 448·exp2, 3 255·exp2; false when the CPU cannot run it.
bool vec_math_avx2(int op, const float* in, float* out, int n);
bool vec_math_emu512(int op, const float* in, float* out, int n);
bool vec_math_avx512_real(int op, const float* in, float* out, int n);
}  // namespace simd_test
}  // namespace sageattn
#endif

using namespace sageattn;

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr uint32_t kSentinel = 0x7FBADBADu;  // a NaN nobody computes

int g_passed = 0, g_failed = 0;

struct Check {
  std::string name;
  int errors = 0;
  explicit Check(std::string n) : name(std::move(n)) {}
  void fail(const char* fmt, ...) {
    if (errors++ < 5) {
      std::printf("  FAIL %s: ", name.c_str());
      va_list ap;
      va_start(ap, fmt);
      std::vprintf(fmt, ap);
      va_end(ap);
      std::printf("\n");
    }
  }
  ~Check() {
    if (errors) {
      ++g_failed;
      if (errors > 5) std::printf("  FAIL %s: ... %d errors in all\n", name.c_str(), errors);
    } else {
      ++g_passed;
    }
  }
};

uint32_t bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float from_bits(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
bool same(float a, float b) { return bits(a) == bits(b) || (a != a && b != b); }
float fp8_rt(float y) { return fp8_e4m3_to_f32(f32_to_fp8_e4m3(y)); }

// A byte buffer with a guard zone after `size` bytes.
struct Guarded {
  std::vector<uint8_t> buf;
  size_t size;
  explicit Guarded(size_t n) : buf(n + 256, 0xA5), size(n) {}
  void* data() { return buf.data(); }
  bool intact() const {
    for (size_t i = size; i < buf.size(); ++i)
      if (buf[i] != 0xA5) return false;
    return true;
  }
};

// A packed Q buffer for up to 64 rows: max(d, 1) floats a row + 64 floats (attention.cc
// gives its 128-row query tile the same per row). Packed K and V tiles are held to the
// byte counts their own k_bytes / v_bytes report, which is what attention.cc allocates.
size_t packed_budget(int d) { return (64 * static_cast<size_t>(d < 1 ? 1 : d) + 64) * 4; }

struct Named {
  const char* name;
  const TileOps* ops;
  bool bf16_layout = false;  // fp8 P·V on VDPBF16PS: P as bf16, V as bf16 pairs of raw codes
};

const int kDims[] = {1, 3, 8, 16, 40, 64, 72, 96, 128, 200, 256};

// ---------------------------------------------------------------------------------
// One random tile through every op.
// ---------------------------------------------------------------------------------
// A running softmax state before a tile, for row `row` of nk scores: half the rows have
// seen no key yet (m = -inf, l = 0), the others a max near the row's (or 0) and some l.
// Returns the row's max (-inf when every score is hidden).
float random_running_state(const float* row, int nk, std::mt19937& rng, float& m0, float& l0) {
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  float mx = -kInf;
  for (int j = 0; j < nk; ++j) mx = row[j] > mx ? row[j] : mx;
  if (rng() % 2 == 0) {
    m0 = -kInf;
    l0 = 0.0f;
  } else {
    m0 = (mx == -kInf ? 0.0f : mx) + 6.0f * (unif(rng) - 0.5f);
    l0 = 0.5f + 50.0f * unif(rng);
  }
  return mx;
}

void run_tile(const Named& isa, std::mt19937& rng, int mq, int nk, int d, int dv, QuantDType t, bool full_int8_range,
              int case_id) {
  const TileOps& ref = scalar_tile_ops();
  const TileOps& ops = *isa.ops;
  char tag[160];
  std::snprintf(tag, sizeof tag, "%s case %d (%s mq=%d nk=%d d=%d dv=%d%s)", isa.name, case_id,
                t == QuantDType::kInt8 ? "int8" : "fp8", mq, nk, d, dv, full_int8_range ? " with -128" : "");
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  const bool int8 = t == QuantDType::kInt8;

  // Codes with padded rows.
  const int qstride = d + static_cast<int>(rng() % 19), kstride = d + static_cast<int>(rng() % 19);
  std::vector<uint8_t> qc(static_cast<size_t>(mq) * qstride), kc(static_cast<size_t>(nk) * kstride);
  auto code = [&]() -> uint8_t {
    if (int8) {
      if (full_int8_range) return static_cast<uint8_t>(rng());
      return static_cast<uint8_t>(static_cast<int>(rng() % 255) - 127);
    }
    uint8_t c = static_cast<uint8_t>(rng() % 0x7F);  // no NaN
    return static_cast<uint8_t>(c | ((rng() & 1) << 7));
  };
  for (auto& x : qc) x = code();
  for (auto& x : kc) x = code();
  if (int8 && full_int8_range) {  // make sure -128 sits in the tail part of some K row too
    kc[static_cast<size_t>(rng() % nk) * kstride + (d - 1)] = 0x80;
  }

  // ---- pack_q / pack_k / qk
  Guarded qp(packed_budget(d)), qr(packed_budget(d));
  Guarded kp(static_cast<size_t>(ops.k_bytes(nk, d, t))), kr(static_cast<size_t>(ref.k_bytes(nk, d, t)));
  ops.pack_q(qc.data(), qstride, mq, d, t, qp.data());
  ops.pack_k(kc.data(), kstride, nk, d, t, kp.data());
  ref.pack_q(qc.data(), qstride, mq, d, t, qr.data());
  ref.pack_k(kc.data(), kstride, nk, d, t, kr.data());
  {
    Check c(std::string(tag) + " pack guards");
    if (!qp.intact()) c.fail("pack_q wrote past %zu bytes", qp.size);
    if (!kp.intact()) c.fail("pack_k wrote past %zu bytes (its k_bytes)", kp.size);
    if (!kr.intact()) c.fail("scalar pack_k wrote past %zu bytes (its k_bytes)", kr.size);
  }
  std::vector<float> rs(mq), cs(nk);
  for (auto& x : rs) x = (0.001f + 0.1f * unif(rng)) * 1.4426950408889634f;
  for (auto& x : cs) x = 0.001f + 0.1f * unif(rng);
  const int lds = nk + static_cast<int>(rng() % 3) * static_cast<int>(rng() % 9);
  std::vector<float> s(static_cast<size_t>(mq) * lds + 8, from_bits(kSentinel)), sr(s.size(), from_bits(kSentinel));
  ops.qk(qp.data(), kp.data(), mq, nk, d, t, rs.data(), cs.data(), s.data(), lds);
  ref.qk(qr.data(), kr.data(), mq, nk, d, t, rs.data(), cs.data(), sr.data(), lds);
  {
    Check c(std::string(tag) + " qk");
    int bit_equal = 0;
    for (int i = 0; i < mq; ++i) {
      for (int j = 0; j < lds; ++j) {
        const size_t at = static_cast<size_t>(i) * lds + j;
        if (j >= nk) {
          if (bits(s[at]) != kSentinel) c.fail("wrote s[%d][%d] past nk", i, j);
          continue;
        }
        if (int8) {
          if (!same(s[at], sr[at])) c.fail("s[%d][%d] = %.9g, scalar %.9g", i, j, s[at], sr[at]);
          continue;
        }
        double bound = 0.0;
        for (int e = 0; e < d; ++e)
          bound += std::fabs(static_cast<double>(fp8_e4m3_to_f32(qc[static_cast<size_t>(i) * qstride + e])) *
                             fp8_e4m3_to_f32(kc[static_cast<size_t>(j) * kstride + e]));
        bound *= static_cast<double>(rs[i]) * cs[j];
        bit_equal += same(s[at], sr[at]);
        if (std::fabs(static_cast<double>(s[at]) - sr[at]) > 1e-6 * bound + 1e-30)
          c.fail("s[%d][%d] = %.9g, scalar %.9g (bound %.3g)", i, j, s[at], sr[at], bound);
      }
    }
    if (bits(s.back()) != kSentinel) c.fail("wrote past the score tile");
  }

  // ---- softmax on the scalar scores, with masking and running state.
  std::vector<float> m0(mq), l0(mq);
  for (int i = 0; i < mq; ++i) {
    float* row = sr.data() + static_cast<size_t>(i) * lds;
    const int kind = static_cast<int>(rng() % 8);
    if (kind == 0) {
      for (int j = 0; j < nk; ++j) row[j] = -kInf;  // fully masked row
    } else if (kind == 1) {
      const int cut = static_cast<int>(rng() % (nk + 1));  // causal-like tail
      for (int j = cut; j < nk; ++j) row[j] = -kInf;
    } else if (kind == 2) {
      for (int j = 0; j < nk; ++j)
        if (rng() % 3 == 0) row[j] = -kInf;
    } else if (kind == 3) {
      for (int j = 0; j < nk; ++j) row[j] = row[j] * 40.0f - 150.0f * unif(rng);  // deep underflow
    }
    random_running_state(row, nk, rng, m0[i], l0[i]);
    if (m0[i] != -kInf && rng() % 8 == 0) m0[i] -= 140.0f;  // alpha underflows
  }
  // The fp8 P·V mode's kernels. bf16-layout modes (VDPBF16PS: P as bf16, V as bf16 pairs
  // of raw codes, V's scale after the dot) are decoded to the scalar layouts to compare.
  const PvOps& fp8 = ops.pv_ops(PvMode::kFp8);
  const PvOps& rfp8 = ref.pv_ops(PvMode::kFp8);
  const bool bf16 = isa.bf16_layout;
  const int ldp = bf16 ? (lds + 1) / 2 * 2 : lds;  // the loop's P rows have an even length
  auto p_at = [&](const std::vector<uint8_t>& raw, int i, int j) -> float {
    const size_t at = static_cast<size_t>(i) * ldp + j;
    if (bf16) {
      uint16_t h;
      std::memcpy(&h, raw.data() + 2 * at, 2);
      return from_bits(static_cast<uint32_t>(h) << 16);
    }
    float f;
    std::memcpy(&f, raw.data() + 4 * at, 4);
    return f;
  };

  // P goes to its own buffer (as attention.cc does); the scalar reference runs in place.
  std::vector<float> sin = sr, pr = sr, m = m0, mr = m0, l = l0, lr = l0, al(mq, -7.0f), alr(mq, -7.0f);
  std::vector<uint8_t> praw(static_cast<size_t>(mq) * ldp * 4 + 64, 0xA5);
  fp8.softmax(sin.data(), lds, mq, nk, m.data(), l.data(), al.data(), praw.data(), ldp, nullptr);
  rfp8.softmax(pr.data(), lds, mq, nk, mr.data(), lr.data(), alr.data(), pr.data(), lds, nullptr);
  {
    Check c(std::string(tag) + " softmax");
    int boundary = 0;
    const size_t elem = bf16 ? 2 : 4;
    for (size_t e = static_cast<size_t>(mq) * ldp * elem; e < praw.size(); ++e)
      if (praw[e] != 0xA5) { c.fail("softmax wrote past row %d", mq - 1); break; }
    for (int i = 0; i < mq; ++i) {
      if (!same(m[i], mr[i])) c.fail("m[%d] = %.9g, scalar %.9g", i, m[i], mr[i]);
      auto rel_ok = [](float a, float b) {
        return same(a, b) || std::fabs(static_cast<double>(a) - b) <= 1e-6 * std::fabs(static_cast<double>(b)) + 1e-37;
      };
      if (!rel_ok(al[i], alr[i])) c.fail("alpha[%d] = %.9g, scalar %.9g", i, al[i], alr[i]);
      if (!rel_ok(l[i], lr[i])) c.fail("l[%d] = %.9g, scalar %.9g", i, l[i], lr[i]);
      if (mr[i] == -kInf && (al[i] != 1.0f || !same(l[i], l0[i]))) c.fail("masked row %d: alpha %g, l changed", i, al[i]);
      const int written = bf16 ? (nk + 1) / 2 * 2 : nk;  // bf16 rows are padded to pairs with 0
      for (int j = nk; j < ldp; ++j) {
        const uint8_t* at = praw.data() + (static_cast<size_t>(i) * ldp + j) * elem;
        if (j < written) {
          if (p_at(praw, i, j) != 0.0f || std::signbit(p_at(praw, i, j))) c.fail("pad p[%d][%d] is not +0", i, j);
        } else if (at[0] != 0xA5 || at[elem - 1] != 0xA5) {
          c.fail("softmax wrote p[%d][%d] past nk", i, j);
        }
      }
      for (int j = 0; j < nk; ++j) {
        const size_t at = static_cast<size_t>(i) * lds + j;
        const float pij = p_at(praw, i, j);
        if (same(pij, pr[at])) continue;
        // Allowed only at an fp8 rounding boundary of 448·p.
        const float diff = sr[at] - mr[i];
        const double y = 448.0 * std::exp2(static_cast<double>(diff));
        const float lo = fp8_rt(static_cast<float>(y * (1.0 - 1e-6))), hi = fp8_rt(static_cast<float>(y * (1.0 + 1e-6)));
        if (lo != hi && (pij == lo || pij == hi)) {
          ++boundary;
        } else {
          c.fail("p[%d][%d] = %.9g, scalar %.9g (s - m = %.9g)", i, j, pij, pr[at], diff);
        }
      }
    }
  }

  // ---- pack_v: every code, NaN included; then pv on NaN-free V.
  const int vstride = dv + static_cast<int>(rng() % 11);
  std::vector<uint8_t> vc(static_cast<size_t>(nk) * vstride);
  for (auto& x : vc) x = static_cast<uint8_t>(rng());
  std::vector<float> vsc(dv), vsr(nk);
  for (auto& x : vsc) x = 0.001f + unif(rng);
  for (auto& x : vsr) x = 0.001f + unif(rng);
  bool per_channel = rng() % 2 == 0;
  // A mode that scales after the dot gets raw codes and one V scale per key tile.
  const float tile_scale = vsr[0];
  if (fp8.v_scale_after_dot) {
    per_channel = false;
    for (auto& x : vsr) x = tile_scale;
  }
  const float* chs = per_channel ? vsc.data() : nullptr;
  const float* rws = per_channel ? nullptr : vsr.data();
  const float* own_chs = fp8.v_scale_after_dot ? nullptr : chs;
  const float* own_rws = fp8.v_scale_after_dot ? nullptr : rws;
  {
    Guarded vp(static_cast<size_t>(fp8.v_bytes(nk, dv))), vr(static_cast<size_t>(rfp8.v_bytes(nk, dv)));
    fp8.pack_v(vc.data(), vstride, DType::kFP8E4M3, nk, dv, own_chs, own_rws, vp.data());
    rfp8.pack_v(vc.data(), vstride, DType::kFP8E4M3, nk, dv, chs, rws, vr.data());
    Check c(std::string(tag) + (per_channel ? " pack_v (channel scale)" : " pack_v (token scale)"));
    if (!vp.intact()) c.fail("pack_v wrote past %zu bytes (its v_bytes)", vp.size);
    if (!vr.intact()) c.fail("scalar pack_v wrote past %zu bytes (its v_bytes)", vr.size);
    const float* b = static_cast<const float*>(vr.data());
    for (int j = 0; j < nk; ++j) {
      for (int cc = 0; cc < dv; ++cc) {
        const int e = j * dv + cc;
        float got;
        if (bf16) {  // pairs of rows: (v[2t][c], v[2t+1][c]) in one word, raw codes
          uint32_t w;
          std::memcpy(&w, static_cast<const uint8_t*>(vp.data()) + 4 * (static_cast<size_t>(j / 2) * dv + cc), 4);
          got = from_bits((j % 2 ? w >> 16 : w & 0xFFFFu) << 16) * vsr[j];
        } else {
          got = static_cast<const float*>(vp.data())[e];
        }
        if (!same(got, b[e])) c.fail("v[%d][%d] = %.9g, scalar %.9g", j, cc, got, b[e]);
      }
      if (bf16 && (nk & 1) && j == nk - 1) {  // the odd last row's partner is +0
        for (int cc = 0; cc < dv; ++cc) {
          uint32_t w;
          std::memcpy(&w, static_cast<const uint8_t*>(vp.data()) + 4 * (static_cast<size_t>(j / 2) * dv + cc), 4);
          if (w >> 16) c.fail("pad of V pair %d channel %d is %04x", j / 2, cc, w >> 16);
        }
      }
    }
  }
  for (auto& x : vc)
    if ((x & 0x7F) == 0x7F) x = 0x7E;
  std::vector<float> vbuf(static_cast<size_t>(nk) * dv + 64);
  rfp8.pack_v(vc.data(), vstride, DType::kFP8E4M3, nk, dv, chs, rws, vbuf.data());
  std::vector<uint8_t> vown(static_cast<size_t>(nk + 1) * dv * 4 + 64);
  fp8.pack_v(vc.data(), vstride, DType::kFP8E4M3, nk, dv, own_chs, own_rws, vown.data());
  // P: the fp8 probabilities, or arbitrary floats (the 16-bit P·V mode); bf16 modes
  // see them rounded to bf16 (and so does the reference).
  std::vector<float> pin = pr;
  if (rng() % 3 == 0)
    for (auto& x : pin) x = unif(rng) < 0.2f ? 0.0f : unif(rng);
  std::vector<uint8_t> pown(static_cast<size_t>(mq) * ldp * 4 + 64, 0);
  for (int i = 0; i < mq; ++i) {
    for (int j = 0; j < nk; ++j) {
      float& x = pin[static_cast<size_t>(i) * lds + j];
      const size_t at = static_cast<size_t>(i) * ldp + j;
      if (bf16) {
        const uint16_t h = static_cast<uint16_t>(bits(x) >> 16);
        x = from_bits(static_cast<uint32_t>(h) << 16);
        std::memcpy(pown.data() + 2 * at, &h, 2);
      } else {
        std::memcpy(pown.data() + 4 * at, &x, 4);
      }
    }
  }
  std::vector<float> alpha = alr;
  if (rng() % 4 == 0)
    for (auto& x : alpha) x = rng() % 3 == 0 ? 0.0f : unif(rng);
  const int ldo = dv + static_cast<int>(rng() % 2) * static_cast<int>(rng() % 13);
  std::vector<float> o(static_cast<size_t>(mq) * ldo + 4, from_bits(kSentinel));
  for (int i = 0; i < mq; ++i)
    for (int cc = 0; cc < dv; ++cc) o[static_cast<size_t>(i) * ldo + cc] = 100.0f * (unif(rng) - 0.5f);
  std::vector<float> orf = o, o0 = o;
  fp8.pv(pown.data(), ldp, nullptr, vown.data(), mq, nk, dv, alpha.data(), fp8.v_scale_after_dot ? tile_scale : 1.0f,
         o.data(), ldo);
  rfp8.pv(pin.data(), lds, nullptr, vbuf.data(), mq, nk, dv, alpha.data(), 1.0f, orf.data(), ldo);
  {
    Check c(std::string(tag) + " pv");
    for (int i = 0; i < mq; ++i) {
      for (int cc = 0; cc < ldo; ++cc) {
        const size_t at = static_cast<size_t>(i) * ldo + cc;
        if (cc >= dv) {
          if (bits(o[at]) != kSentinel) c.fail("pv wrote o[%d][%d] past dv", i, cc);
          continue;
        }
        double bound = std::fabs(static_cast<double>(o0[at]) * alpha[i]);
        for (int j = 0; j < nk; ++j)
          bound += std::fabs(static_cast<double>(pin[static_cast<size_t>(i) * lds + j]) * vbuf[static_cast<size_t>(j) * dv + cc]);
        if (std::fabs(static_cast<double>(o[at]) - orf[at]) > 1e-5 * bound + 1e-30)
          c.fail("o[%d][%d] = %.9g, scalar %.9g (bound %.3g)", i, cc, o[at], orf[at], bound);
      }
    }
    if (bits(o.back()) != kSentinel) c.fail("pv wrote past the output tile");
  }
}

// ---------------------------------------------------------------------------------
// The int8 P·V mode (sageattn/pv_int8.h). pack_v + pv: bit-equal to the scalar path for
// any u8 P codes and int8 V codes (-128 included), because the integer sums are exact and
// the float steps after them are the same; with alpha 0 and unit scales the result is the
// exact integer sum. softmax: m exact, l and alpha within 1e-6, p_scale within 1e-6, codes
// equal except where p·255/pmax lies within 1e-5 of a rounding boundary (the SIMD exp2
// differs from std::exp2 by <= 2 ulp); zero padding to a multiple of 4 keys and nothing
// written past it.
// ---------------------------------------------------------------------------------

void test_int8_pv_tile(const Named& isa, std::mt19937& rng, int mq, int nk, int dv, int case_id) {
  const PvOps& ops = isa.ops->pv_ops(PvMode::kInt8);
  const PvOps& ref = scalar_tile_ops().pv_ops(PvMode::kInt8);
  char tag[160];
  std::snprintf(tag, sizeof tag, "%s int8 P·V case %d (mq=%d nk=%d dv=%d)", isa.name, case_id, mq, nk, dv);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  const int extremes = static_cast<int>(rng() % 3);  // 0: random codes, 1: mostly extremes, 2: worst case
  const int vstride = dv + static_cast<int>(rng() % 11);
  std::vector<int8_t> vc(static_cast<size_t>(nk) * vstride);
  for (auto& x : vc) {
    const uint32_t r = rng();
    x = extremes == 2 ? int8_t(-128) : (extremes == 1 && r % 2) ? static_cast<int8_t>(r % 4 ? 127 : -128)
                                                                : static_cast<int8_t>(r >> 8);
  }
  Guarded vp(static_cast<size_t>(ops.v_bytes(nk, dv))), vr(static_cast<size_t>(ref.v_bytes(nk, dv)));
  ops.pack_v(vc.data(), vstride, DType::kI8, nk, dv, nullptr, nullptr, vp.data());
  ref.pack_v(vc.data(), vstride, DType::kI8, nk, dv, nullptr, nullptr, vr.data());
  {
    Check c(std::string(tag) + " pack_v guard");
    if (!vp.intact()) c.fail("pack_v wrote past %zu bytes (its v_bytes)", vp.size);
    if (!vr.intact()) c.fail("scalar pack_v wrote past %zu bytes (its v_bytes)", vr.size);
  }
  const int ldp = (nk + 3) / 4 * 4 + 4 * static_cast<int>(rng() % 3);
  std::vector<uint8_t> pc(static_cast<size_t>(mq) * ldp, 0);
  for (int i = 0; i < mq; ++i)
    for (int j = 0; j < nk; ++j) {
      const uint32_t r = rng();
      pc[static_cast<size_t>(i) * ldp + j] = extremes == 2 ? 255 : (extremes == 1 && r % 2) ? 255 : static_cast<uint8_t>(r >> 8);
    }
  std::vector<float> ps(mq), al(mq);
  for (auto& x : ps) x = rng() % 9 == 0 ? 0.0f : unif(rng) / 255.0f;
  // Every third case holds alpha = 1 on all rows: the kernels' path that skips o·alpha.
  const bool alpha_one = case_id % 3 == 0;
  for (auto& x : al) x = alpha_one ? 1.0f : rng() % 4 == 0 ? (rng() % 2 ? 0.0f : 1.0f) : unif(rng);
  const float vs = rng() % 2 ? 1.0f : 0.001f + unif(rng);
  const int ldo = dv + static_cast<int>(rng() % 2) * static_cast<int>(rng() % 13);
  std::vector<float> o(static_cast<size_t>(mq) * ldo + 4, from_bits(kSentinel));
  for (int i = 0; i < mq; ++i)
    for (int cc = 0; cc < dv; ++cc) o[static_cast<size_t>(i) * ldo + cc] = 100.0f * (unif(rng) - 0.5f);
  std::vector<float> orf = o;
  ops.pv(pc.data(), ldp, ps.data(), vp.data(), mq, nk, dv, al.data(), vs, o.data(), ldo);
  ref.pv(pc.data(), ldp, ps.data(), vr.data(), mq, nk, dv, al.data(), vs, orf.data(), ldo);
  {
    Check c(std::string(tag) + " pv (bitwise)");
    for (int i = 0; i < mq; ++i)
      for (int cc = 0; cc < ldo; ++cc) {
        const size_t at = static_cast<size_t>(i) * ldo + cc;
        if (cc >= dv) {
          if (bits(o[at]) != kSentinel) c.fail("pv wrote o[%d][%d] past dv", i, cc);
        } else if (bits(o[at]) != bits(orf[at])) {
          c.fail("o[%d][%d] = %.9g, scalar %.9g", i, cc, o[at], orf[at]);
        }
      }
    if (bits(o.back()) != kSentinel) c.fail("pv wrote past the output tile");
  }
  // alpha 0, unit scales: o is the integer sum itself, exactly.
  std::vector<float> zeros(mq, 0.0f), ones(mq, 1.0f), oz(static_cast<size_t>(mq) * dv, 0.0f);
  ops.pv(pc.data(), ldp, ones.data(), vp.data(), mq, nk, dv, zeros.data(), 1.0f, oz.data(), dv);
  {
    Check c(std::string(tag) + " pv exact integer sums");
    for (int i = 0; i < mq; ++i)
      for (int cc = 0; cc < dv; ++cc) {
        int64_t want = 0;
        for (int j = 0; j < nk; ++j)
          want += int64_t{pc[static_cast<size_t>(i) * ldp + j]} * vc[static_cast<size_t>(j) * vstride + cc];
        if (oz[static_cast<size_t>(i) * dv + cc] != static_cast<float>(want))
          c.fail("sum[%d][%d] = %.9g, want %lld", i, cc, oz[static_cast<size_t>(i) * dv + cc], static_cast<long long>(want));
      }
  }
}

void test_int8_softmax(const Named& isa, std::mt19937& rng, int mq, int nk, int case_id) {
  const PvOps& ops = isa.ops->pv_ops(PvMode::kInt8);
  const PvOps& ref = scalar_tile_ops().pv_ops(PvMode::kInt8);
  char tag[160];
  std::snprintf(tag, sizeof tag, "%s int8 softmax case %d (mq=%d nk=%d)", isa.name, case_id, mq, nk);
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  const int lds = nk + static_cast<int>(rng() % 5);
  std::vector<float> s(static_cast<size_t>(mq) * lds), m0(mq), l0(mq);
  for (int i = 0; i < mq; ++i) {
    float* row = s.data() + static_cast<size_t>(i) * lds;
    for (int j = 0; j < nk; ++j) row[j] = 20.0f * (unif(rng) - 0.5f);
    const int kind = static_cast<int>(rng() % 9);
    if (kind == 0) {
      for (int j = 0; j < nk; ++j) row[j] = -kInf;  // fully masked
    } else if (kind == 1) {
      for (int j = static_cast<int>(rng() % (nk + 1)); j < nk; ++j) row[j] = -kInf;  // causal-like
    } else if (kind == 2) {
      row[rng() % nk] = std::numeric_limits<float>::quiet_NaN();
    }
    const float mx = random_running_state(row, nk, rng, m0[i], l0[i]);
    if (kind == 3 && m0[i] != -kInf) m0[i] = (mx == -kInf ? 0.0f : mx) + 300.0f;  // every p of the tile underflows
  }
  const int padded = (nk + 3) / 4 * 4, ldp = padded + 4 * static_cast<int>(rng() % 3);
  std::vector<uint8_t> p(static_cast<size_t>(mq) * ldp, 0xA5), pr = p;
  std::vector<float> s1 = s, sr = s, m = m0, mr = m0, l = l0, lr = l0, al(mq, -7.0f), alr(mq, -7.0f),
                     ps(mq, -7.0f), psr(mq, -7.0f);
  ops.softmax(s1.data(), lds, mq, nk, m.data(), l.data(), al.data(), p.data(), ldp, ps.data());
  ref.softmax(sr.data(), lds, mq, nk, mr.data(), lr.data(), alr.data(), pr.data(), ldp, psr.data());
  Check c{std::string(tag)};
  auto rel_ok = [](float a, float b) {
    return same(a, b) || std::fabs(static_cast<double>(a) - b) <= 1e-6 * std::fabs(static_cast<double>(b)) + 1e-37;
  };
  int boundary = 0;
  for (int i = 0; i < mq; ++i) {
    if (!same(m[i], mr[i])) c.fail("m[%d] = %.9g, scalar %.9g", i, m[i], mr[i]);
    if (!rel_ok(al[i], alr[i])) c.fail("alpha[%d] = %.9g, scalar %.9g", i, al[i], alr[i]);
    if (!rel_ok(l[i], lr[i])) c.fail("l[%d] = %.9g, scalar %.9g", i, l[i], lr[i]);
    if (!rel_ok(ps[i], psr[i])) c.fail("p_scale[%d] = %.9g, scalar %.9g", i, ps[i], psr[i]);
    const uint8_t* a = p.data() + static_cast<size_t>(i) * ldp;
    const uint8_t* b = pr.data() + static_cast<size_t>(i) * ldp;
    for (int j = 0; j < ldp; ++j) {
      if (j >= padded) {
        if (a[j] != 0xA5) c.fail("softmax wrote p[%d][%d] past the padding", i, j);
      } else if (j >= nk) {
        if (a[j] != 0) c.fail("padding p[%d][%d] = %d, want 0", i, j, a[j]);
      } else if (a[j] != b[j]) {
        // Allowed only where p·255/pmax sits at a rounding boundary.
        const double y = std::exp2(static_cast<double>(s[static_cast<size_t>(i) * lds + j]) - mr[i]) * 255.0 *
                         (1.0 / (255.0 * psr[i]));
        const double frac = y - std::floor(y);
        if (std::abs(static_cast<int>(a[j]) - b[j]) == 1 && std::fabs(frac - 0.5) < 1e-5 * (1.0 + y)) {
          ++boundary;
        } else {
          c.fail("code[%d][%d] = %d, scalar %d (y = %.9g)", i, j, a[j], b[j], y);
        }
      }
    }
  }
}

// Every fp8 code through pack_v with scale 1: the vector decode is bit-exact.
void test_decode_all_codes(const Named& isa) {
  Check c(std::string(isa.name) + " fp8 decode of all 256 codes");
  const PvOps& fp8 = isa.ops->pv_ops(PvMode::kFp8);
  std::vector<uint8_t> codes(256);
  for (int i = 0; i < 256; ++i) codes[i] = static_cast<uint8_t>(i);
  if (isa.bf16_layout) {  // two rows (codes, reversed codes) -> one row of bf16 pairs
    std::vector<uint8_t> rows(512);
    for (int i = 0; i < 256; ++i) rows[i] = codes[i], rows[256 + i] = codes[255 - i];
    for (int dv : {256, 13, 24, 31}) {
      std::vector<uint32_t> out(dv + 64);
      for (int c0 = 0; c0 + dv <= 256; c0 += dv) {
        fp8.pack_v(rows.data() + c0, 256, DType::kFP8E4M3, 2, dv, nullptr, nullptr, out.data());
        for (int e = 0; e < dv; ++e) {
          const uint32_t want = (bits(fp8_e4m3_to_f32(rows[c0 + e])) >> 16) |
                                (bits(fp8_e4m3_to_f32(rows[256 + c0 + e])) & 0xFFFF0000u);
          if (out[e] != want) c.fail("codes 0x%02x/0x%02x -> %08x, want %08x", rows[c0 + e], rows[256 + c0 + e], out[e], want);
        }
      }
    }
    return;
  }
  std::vector<float> ones(256, 1.0f), out(256 + 64);
  for (int dv : {256, 13, 24, 31}) {  // 16- and 8-wide bodies, scalar tails
    for (int r = 0; r * dv < 256; ++r) {
      const int n = 256 - r * dv < dv ? 256 - r * dv : dv;
      fp8.pack_v(codes.data() + r * dv, dv, DType::kFP8E4M3, 1, n, ones.data(), nullptr, out.data());
      for (int e = 0; e < n; ++e) {
        const float want = fp8_e4m3_to_f32(codes[r * dv + e]);
        if (bits(out[e]) != bits(want)) c.fail("code 0x%02x -> %08x, want %08x", codes[r * dv + e], bits(out[e]), bits(want));
      }
    }
  }
  // Per-token scale path.
  std::vector<float> rs(1, 1.0f);
  fp8.pack_v(codes.data(), 256, DType::kFP8E4M3, 1, 256, nullptr, rs.data(), out.data());
  for (int e = 0; e < 256; ++e)
    if (bits(out[e]) != bits(fp8_e4m3_to_f32(codes[e]))) c.fail("token-scale code 0x%02x", e);
}

// exp2 through softmax: a one-key row with m = 0, l = 0 returns l = exp2(s).
void test_exp2_via_softmax(const Named& isa) {
  Check c(std::string(isa.name) + " softmax exp2 (<= 2 ulp, -inf -> 0)");
  std::vector<float> xs = {0.0f, -0.0f, -1e-30f, -1e-7f, -0.5f, -1.0f, -126.0f, -126.5f, -127.0f, -140.3f,
                           -149.0f, -149.5f, -150.0f, -151.0f, -200.0f, -1e30f, -kInf};
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-152.0f, 0.0f);
  for (int i = 0; i < 20000; ++i) xs.push_back(u(rng));
  for (int i = -150; i <= 0; ++i) {
    xs.push_back(static_cast<float>(i));
    if (i < 0) xs.push_back(static_cast<float>(i) + 0.5f);
  }
  int worst = 0;
  for (size_t b = 0; b < xs.size(); b += 64) {
    const int n = static_cast<int>(xs.size() - b < 64 ? xs.size() - b : 64);
    std::vector<float> s(xs.begin() + b, xs.begin() + b + n), m(n, 0.0f), l(n, 0.0f), a(n), p(2 * n);
    isa.ops->pv_ops(PvMode::kFp8).softmax(s.data(), 1, n, 1, m.data(), l.data(), a.data(), p.data(), 2, nullptr);
    for (int i = 0; i < n; ++i) {
      const float want = static_cast<float>(std::exp2(static_cast<double>(xs[b + i])));
      const int ulps = std::abs(static_cast<int>(bits(l[i])) - static_cast<int>(bits(want)));
      worst = ulps > worst ? ulps : worst;
      if (ulps > 2) c.fail("exp2(%.9g) = %.9g, want %.9g (%d ulp)", xs[b + i], l[i], want, ulps);
      if (a[i] != 1.0f) c.fail("alpha = %.9g for m unchanged", a[i]);
    }
  }
  std::printf("  %s: softmax exp2 worst error %d ulp over %zu points in [-152, 0]\n", isa.name, worst, xs.size());
}

// The kernels' vector exp2 and fp8 rounding, called directly (AVX2, its AVX-512
// emulation, and the real AVX-512 instructions where the CPU has them): exp2 and the
// 8-bit P modes' scaled exp2 (448·2^x, 255·2^x) over [-150, 63], fp8 rounding on every
// boundary neighbourhood.
void test_vector_math(const char* name, bool (*fn)(int op, const float*, float*, int)) {
  float probe[16] = {};
  if (!fn(0, probe, probe, 16)) {
    std::printf("skip %s vector math: this CPU cannot execute it\n", name);
    return;
  }
  for (const int op : {0, 2, 3}) {
    const double scale = op == 0 ? 1.0 : op == 2 ? 448.0 : 255.0;
    char label[96];
    // The scaled forms serve the softmax, x <= 0 (their domain: scale·2^x must stay finite).
    const float top = op == 0 ? 63.0f : 0.0f;
    std::snprintf(label, sizeof label, "%s %g·exp2 over [-150, %g] (<= 2 ulp)", name, scale, top);
    Check c(label);
    std::vector<float> xs;
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-150.0f, top);  // domain: x < 63.5
    for (int i = 0; i < 200000; ++i) xs.push_back(u(rng));
    for (int i = -150; i <= static_cast<int>(top); ++i) {  // integers and the round-to-nearest ties
      xs.push_back(static_cast<float>(i));
      if (i == static_cast<int>(top)) break;  // the domain ends where round(x) would pass it
      xs.push_back(static_cast<float>(i) + 0.5f);
      xs.push_back(std::nextafter(static_cast<float>(i) + 0.5f, 100.0f));
    }
    xs.push_back(-kInf);
    xs.push_back(-1e30f);
    while (xs.size() % 16) xs.push_back(0.0f);
    std::vector<float> out(xs.size());
    fn(op, xs.data(), out.data(), static_cast<int>(xs.size()));
    int worst = 0;
    for (size_t i = 0; i < xs.size(); ++i) {
      const float want = static_cast<float>(scale * std::exp2(static_cast<double>(xs[i])));
      const int ulps = std::abs(static_cast<int>(bits(out[i])) - static_cast<int>(bits(want)));
      worst = ulps > worst ? ulps : worst;
      if (ulps > 2) c.fail("exp2(%.9g) = %.9g, want %.9g (%d ulp)", xs[i], out[i], want, ulps);
    }
    std::printf("  %s: %g·exp2 worst error %d ulp over %zu points\n", name, scale, worst, xs.size());
  }
  {
    Check c(std::string(name) + " fp8 rounding (boundaries, ties, subnormals, saturation)");
    std::vector<float> ys;
    const uint32_t lows[] = {0, 1, 2, 0x3FFFF, 0x7FFFE, 0x7FFFF, 0x80000, 0x80001, 0xC0000, 0xFFFFE, 0xFFFFF};
    for (uint32_t hi = 0; hi <= (0x43F00000u >> 20); ++hi)  // every 12-bit top up to 480
      for (uint32_t lo : lows) ys.push_back(from_bits((hi << 20) | lo));
    for (int k = 0; k <= 80; ++k) {  // subnormal range: multiples of 2^-10 and neighbours
      const float y = static_cast<float>(k) * 0.0009765625f;
      ys.push_back(y);
      ys.push_back(std::nextafter(y, 1.0f));
      if (k) ys.push_back(std::nextafter(y, 0.0f));
    }
    for (float y : {447.0f, 448.0f, 449.0f, 463.99f, 464.0f, 480.0f, 1e30f, kInf, 0.0f})
      ys.push_back(y);
    ys.push_back(from_bits(0x7FC00000u));
    while (ys.size() % 16) ys.push_back(1.0f);
    std::vector<float> out(ys.size());
    fn(1, ys.data(), out.data(), static_cast<int>(ys.size()));
    for (size_t i = 0; i < ys.size(); ++i) {
      const float want = fp8_rt(ys[i]);
      if (!same(out[i], want)) c.fail("round(%.9g [%08x]) = %.9g, want %.9g", ys[i], bits(ys[i]), out[i], want);
    }
  }
}

#if defined(SAGEATTN_TEST_HAVE_EMU512)
// VDPBF16PS: the emulation against the instruction's definition written out here, and
// against the real instruction where this CPU has it. Inputs cover bf16 zeros,
// denormals, normals of every exponent, infinities and NaN, and denormal accumulators.
void test_bf16_dot_emulation() {
  Check c("VDPBF16PS emulation");
  auto flush = [](float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; };
  auto bf = [](uint32_t h) { return from_bits(h << 16); };
  std::mt19937 rng(77);
  auto any_bf16 = [&]() -> uint32_t {
    switch (rng() % 6) {
      case 0: return rng() & 0x807Fu;                                  // zero or denormal
      case 1: return (rng() & 0x8000u) | 0x7F80u | (rng() % 3 ? 0u : 0x40u);  // inf or NaN
      case 2: return (rng() & 0x8000u) | ((60u + rng() % 8) << 7) | (rng() & 0x7Fu);  // products near 2^-126
      default: return rng() & 0xFFFFu;
    }
  };
  const int n = 1 << 16;
  std::vector<float> acc(n), emu(n), real(n);
  std::vector<uint32_t> a(n), b(n);
  for (int i = 0; i < n; ++i) {
    a[i] = any_bf16() | (any_bf16() << 16);
    b[i] = any_bf16() | (any_bf16() << 16);
    const uint32_t kind = rng() % 4;
    acc[i] = kind == 0 ? from_bits(rng() & 0x807FFFFFu) : from_bits(rng());  // denormal or any
  }
  simd_test::dpbf16_emu512(acc.data(), a.data(), b.data(), emu.data(), n);
  int defined_mismatch = 0;
  for (int i = 0; i < n; ++i) {
    float r = flush(acc[i]);
    r = flush(std::fma(flush(bf(a[i] >> 16)), flush(bf(b[i] >> 16)), r));
    r = flush(std::fma(flush(bf(a[i] & 0xFFFFu)), flush(bf(b[i] & 0xFFFFu)), r));
    if (!same(emu[i], r)) {
      if (defined_mismatch++ < 5) c.fail("emulation %08x, definition %08x", bits(emu[i]), bits(r));
    }
  }
  if (simd_test::dpbf16_real(acc.data(), a.data(), b.data(), real.data(), n)) {
    int mismatch = 0;
    for (int i = 0; i < n; ++i) {
      if (!same(emu[i], real[i]) && mismatch++ < 5)
        c.fail("a %08x b %08x acc %08x: instruction %08x, emulation %08x", a[i], b[i], bits(acc[i]), bits(real[i]),
               bits(emu[i]));
    }
    std::printf("  VDPBF16PS: real instruction vs emulation over %d lanes: %d differ\n", n, mismatch);
  } else {
    std::printf("  VDPBF16PS: this CPU lacks AVX-512 BF16; emulation checked against its definition only\n");
  }
}
#endif

// attention_forward with K/V packed once per (b, kv head) and shared, against packing
// per query tile: the same kernels in the same order, so bitwise equal outputs and LSE.
void test_shared_key_tiles(const IsaInfo& isa) {
  std::mt19937 rng(99);
  set_isa_override(isa.name);
  for (int rep = 0; rep < 8; ++rep) {
    const int64_t B = 1 + rep % 2, Hkv = 1 + rep % 2, Hq = Hkv * (1 + rep % 3), Nq = 1 + rng() % 300, Nk = 1 + rng() % 300;
    const int64_t D = (rep % 4 == 3) ? 40 : 64, Dv = rep % 2 ? 72 : 64;
    const bool fp8_qk = rep % 4 >= 2, causal = rep % 3 == 1;
    const PvMode mode = rep == 5 ? PvMode::kHalf : PvMode::kFp8;
    std::vector<uint8_t> q(B * Nq * Hq * D), k(B * Nk * Hkv * D);
    std::vector<uint16_t> vh(B * Nk * Hkv * Dv);
    std::vector<uint8_t> v(B * Nk * Hkv * Dv);
    for (auto& x : q) x = fp8_qk ? static_cast<uint8_t>(rng() % 0x7F) | ((rng() & 1) << 7) : static_cast<uint8_t>(rng() % 255 + 1);
    for (auto& x : k) x = fp8_qk ? static_cast<uint8_t>(rng() % 0x7F) | ((rng() & 1) << 7) : static_cast<uint8_t>(rng() % 255 + 1);
    for (auto& x : v) x = static_cast<uint8_t>(rng() % 0x7F) | ((rng() & 1) << 7);
    for (auto& x : vh) x = static_cast<uint16_t>(0x3C00 + rng() % 0x3FF);  // fp16 in [1, 2)
    const bool per_token_v = rep % 2 == 1;
    std::vector<float> qs(B * Hq * 3, 0.02f), ks(B * Hkv * 3 * 8, 0.03f), vs(B * Hkv * std::max<int64_t>(Dv, 3), 0.5f);
    for (auto& x : ks) x = 0.01f + 0.0001f * (rng() % 100);
    for (auto& x : vs) x = 0.1f + 0.01f * (rng() % 100);
    auto ref4 = [](void* data, DType t, int64_t a, int64_t b, int64_t c, int64_t dd) {
      TensorRef r;
      r.data = data; r.dtype = t; r.ndim = 4;
      r.shape[0] = a; r.shape[1] = b; r.shape[2] = c; r.shape[3] = dd;
      r.stride[3] = 1; r.stride[2] = dd; r.stride[1] = c * dd; r.stride[0] = b * c * dd;
      return r;
    };
    auto ref3 = [](float* data, int64_t a, int64_t b, int64_t c) {
      TensorRef r;
      r.data = data; r.dtype = DType::kF32; r.ndim = 3;
      r.shape[0] = a; r.shape[1] = b; r.shape[2] = c;
      r.stride[2] = 1; r.stride[1] = c; r.stride[0] = b * c;
      return r;
    };
    std::vector<float> out_a(B * Nq * Hq * Dv), out_b(out_a.size()), lse_a(B * Hq * Nq), lse_b(lse_a.size());
    auto run = [&](std::vector<float>& out, std::vector<float>& lse, int64_t max_bytes) {
      AttentionArgs a;
      const DType qd = fp8_qk ? DType::kFP8E4M3 : DType::kI8;
      a.q = ref4(q.data(), qd, B, Nq, Hq, D);
      a.k = ref4(k.data(), qd, B, Nk, Hkv, D);
      a.qk_dtype = fp8_qk ? QuantDType::kFP8 : QuantDType::kInt8;
      a.q_grouping = TokenGrouping{128, 1, 128};
      a.k_grouping = TokenGrouping{128, 8, 8};
      a.q_scale = ref3(qs.data(), B, Hq, a.q_grouping.num_groups(Nq));
      a.k_scale = ref3(ks.data(), B, Hkv, a.k_grouping.num_groups(Nk));
      a.pv_mode = mode;
      if (mode == PvMode::kHalf) {
        a.v = ref4(vh.data(), DType::kF16, B, Nk, Hkv, Dv);
      } else {
        a.v = ref4(v.data(), DType::kFP8E4M3, B, Nk, Hkv, Dv);
        a.v_scale_mode = per_token_v ? VScaleMode::kPerToken : VScaleMode::kPerChannel;
        a.v_grouping = TokenGrouping{128, 1, 128};
        a.v_scale = ref3(vs.data(), B, Hkv, per_token_v ? a.v_grouping.num_groups(Nk) : Dv);
      }
      a.sm_scale = 0.125f;
      a.causal = causal;
      a.out = ref4(out.data(), DType::kF32, B, Nq, Hq, Dv);
      a.lse = ref3(lse.data(), B, Hq, Nq);
      a.num_threads = 1 + rep % 3;
      a.shared_kv_max_bytes = max_bytes;
      attention_forward(a);
    };
    run(out_a, lse_a, int64_t{1} << 40);
    run(out_b, lse_b, 0);
    Check c(std::string(isa.name) + " attention: shared K/V tiles vs per-query-tile packing, case " + std::to_string(rep));
    for (size_t i = 0; i < out_a.size(); ++i)
      if (!same(out_a[i], out_b[i])) c.fail("out[%zu] = %.9g shared, %.9g per tile", i, out_a[i], out_b[i]);
    for (size_t i = 0; i < lse_a.size(); ++i)
      if (!same(lse_a[i], lse_b[i])) c.fail("lse[%zu] = %.9g shared, %.9g per tile", i, lse_a[i], lse_b[i]);
  }
  set_isa_override("auto");
}

}  // namespace

int main() {
  std::vector<Named> isas;
  for (const IsaInfo& e : isa_table()) {  // every SIMD level of the ISA table
    if (e.isa == Isa::kScalar) continue;
    if (e.available()) {
      // Modes that scale V after the dot are the VDPBF16PS ones (bf16 P and V pairs).
      isas.push_back({e.name, &e.tile_ops(), e.tile_ops().pv_ops(PvMode::kFp8).v_scale_after_dot});
    } else {
      std::printf("skip %s: this CPU cannot execute it (its kernels still run below through the AVX2 "
                  "emulation when they are AVX-512 ones)\n", e.name);
    }
  }
#if defined(SAGEATTN_TEST_HAVE_EMU512)
  if (isa_available(Isa::kAvx2)) {
    isas.push_back({"emu512", &emu512_tile_ops()});
    isas.push_back({"emu512_bf16", &emu512_bf16_tile_ops(), true});
    test_bf16_dot_emulation();
    test_vector_math("avx2", simd_test::vec_math_avx2);
    test_vector_math("emu512", simd_test::vec_math_emu512);
    test_vector_math("avx512", simd_test::vec_math_avx512_real);
  } else {
    std::printf("skip emu512: needs AVX2\n");
  }
#else
  std::printf("skip emu512: not an x86 build\n");
#endif

  for (const Named& isa : isas) {
    std::printf("%s\n", isa.name);
    test_decode_all_codes(isa);
    test_exp2_via_softmax(isa);
    std::mt19937 rng(1234);
    int case_id = 0;
    // Every head dim (Q·K and V), both dtypes, a spread of tile shapes.
    for (int d : kDims) {
      for (QuantDType t : {QuantDType::kInt8, QuantDType::kFP8}) {
        for (int rep = 0; rep < 6; ++rep) {
          int mq = 1 + static_cast<int>(rng() % 64), nk = 1 + static_cast<int>(rng() % 64);
          if (rep == 0) mq = nk = 64;
          if (rep == 1) { mq = 1; nk = 1 + static_cast<int>(rng() % 64); }
          const int dv = kDims[rng() % (sizeof kDims / sizeof kDims[0])];
          const bool full = t == QuantDType::kInt8 && rep % 2 == 1;
          run_tile(isa, rng, mq, nk, d, dv, t, full, case_id++);
        }
      }
    }
    for (int dv : kDims) {
      for (int rep = 0; rep < 3; ++rep) {
        const int d = kDims[rng() % (sizeof kDims / sizeof kDims[0])];
        run_tile(isa, rng, 1 + static_cast<int>(rng() % 64), 1 + static_cast<int>(rng() % 64), d, dv,
                 rep % 2 ? QuantDType::kFP8 : QuantDType::kInt8, rep == 2, case_id++);
      }
    }
    // The int8 P·V mode: every V head dim, full and ragged tiles, up to 128 query rows.
    for (int dv : kDims) {
      for (int rep = 0; rep < 6; ++rep) {
        int mq = 1 + static_cast<int>(rng() % 128), nk = 1 + static_cast<int>(rng() % 64);
        if (rep == 0) { mq = 128; nk = 64; }
        test_int8_pv_tile(isa, rng, mq, nk, dv, case_id++);
        test_int8_softmax(isa, rng, mq, nk, case_id++);
      }
    }
  }
  for (const IsaInfo& e : isa_table())
    if (e.available()) test_shared_key_tiles(e);
  std::printf("test_tile_ops: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
