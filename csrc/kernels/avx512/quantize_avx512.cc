// AVX-512 quantizer kernels: the same source as the AVX2 path (include/sageattn/
// quant_x86.h), built with the AVX-512 flags. The kernels stay 256 bits wide on
// purpose: they are bound by the fp32 division (whose per-element throughput does not
// grow with 512-bit vectors on current cores) and by memory, and keeping one source
// means this path is bitwise the tested AVX2 path, differing only in instruction
// encoding and register allocation.
#include "sageattn/quant_x86.h"

namespace sageattn {

const QuantOps& avx512_quant_ops() {
  static const QuantOps ops = quant_x86::make_quant_ops();
  return ops;
}

}  // namespace sageattn
