// AVX2 + F16C quantizer kernels (include/sageattn/quant_x86.h built with the AVX2 flags).
#include "sageattn/quant_x86.h"

namespace sageattn {

const QuantOps& avx2_quant_ops() {
  static const QuantOps ops = quant_x86::make_quant_ops();
  return ops;
}

}  // namespace sageattn
