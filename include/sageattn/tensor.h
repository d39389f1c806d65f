// A framework-agnostic strided tensor reference: what the core computes on.
// Strides are in elements and may be zero (broadcast) or arbitrary; validate.h
// checks that every element the kernels will touch lies inside the caller's buffer.
#pragma once
#include <cstdint>

namespace sageattn {

enum class DType : uint8_t { kF16, kBF16, kF32, kI8, kFP8E4M3, kU8, kBool };

const char* dtype_name(DType t);
int dtype_size(DType t);

struct TensorRef {
  static constexpr int kMaxDims = 4;
  void* data = nullptr;
  DType dtype = DType::kF32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t stride[kMaxDims] = {0, 0, 0, 0};

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  template <typename T>
  T* ptr() const { return static_cast<T*>(data); }
};

}  // namespace sageattn
