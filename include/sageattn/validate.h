// Checks every C++ entry point runs before touching memory. They throw sageattn::Error
// whose message names the argument, so a bad call never reads or writes out of bounds.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "sageattn/tensor.h"

namespace sageattn {

[[noreturn]] void fail_value(const std::string& msg);
[[noreturn]] void fail_type(const std::string& msg);

void check_ndim(const TensorRef& t, int ndim, const char* name);
void check_dtype(const TensorRef& t, std::initializer_list<DType> allowed, const char* name);
void check_shape(const TensorRef& t, std::initializer_list<int64_t> shape, const char* name);
void check_non_negative_strides(const TensorRef& t, const char* name);
// Outputs: no two distinct indices may alias (zero strides or overlapping rows).
void check_no_self_overlap(const TensorRef& t, const char* name);
// A broadcastable operand: each dim equals `shape[i]` or is 1 (read with stride 0).
void check_broadcastable(const TensorRef& t, std::initializer_list<int64_t> shape, const char* name);

// Token groupings come from callers: bound them so group counts cannot overflow int64
// and every group index stays inside the scale tensor.
struct TokenGrouping;
void check_grouping(const TokenGrouping& g, const char* name);

// Element offset of index `idx` through t's strides, with stride 0 on broadcast dims.
inline int64_t bcast_offset(const TensorRef& t, int dim, int64_t idx) {
  return t.shape[dim] == 1 ? 0 : idx * t.stride[dim];
}

}  // namespace sageattn
