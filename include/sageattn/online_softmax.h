// The portable online-softmax step, shared by the scalar TileOps (P = fp8(448·p)) and
// the 16-bit P·V mode (P = fp16(p)); only the rounding of p differs between them.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

namespace sageattn {

// In log2 units: m (row max) and l (row sum of the unquantized p) are updated, alpha[i] =
// exp2(m_old - m_new), and p (row i at p + i*ldp) gets round_p(exp2(s - m_new)); p may be s. A row whose max
// is still -inf gets p = 0 and alpha = 1; a NaN score makes the whole row NaN.
template <class RoundP>
inline void online_softmax_rows(const float* s, int lds, int mq, int nk, float* m, float* l, float* alpha,
                                float* p, int ldp, RoundP round_p) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (int i = 0; i < mq; ++i) {
    const float* row = s + static_cast<int64_t>(i) * lds;
    float* prow = p + static_cast<int64_t>(i) * ldp;
    float mx = kNegInf;
    for (int j = 0; j < nk; ++j) mx = (row[j] > mx || row[j] != row[j]) ? row[j] : mx;
    const float m_new = (mx != mx || mx > m[i]) ? mx : m[i];
    if (m_new == kNegInf) {
      alpha[i] = 1.0f;
      for (int j = 0; j < nk; ++j) prow[j] = 0.0f;
      continue;
    }
    alpha[i] = std::exp2(m[i] - m_new);
    float sum = 0.0f;
    for (int j = 0; j < nk; ++j) {
      const float pj = std::exp2(row[j] - m_new);
      sum += pj;
      prow[j] = round_p(pj);
    }
    l[i] = l[i] * alpha[i] + sum;
    m[i] = m_new;
  }
}

}  // namespace sageattn
