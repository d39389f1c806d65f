// DLPack -> sageattn::TensorRef, with the checks every FFI entry needs: CPU memory,
// a dtype the core knows, at most 4 dims, and explicit strides (compact if absent).
#pragma once
#include <dlpack/dlpack.h>

#include <optional>

#include "sageattn/tensor.h"

namespace sageattn {

TensorRef to_tensor_ref(const DLTensor* t, const char* name);

template <typename Opt>
std::optional<TensorRef> to_optional_ref(const Opt& t, const char* name) {
  if (!t.has_value()) return std::nullopt;
  return to_tensor_ref(*t, name);
}

}  // namespace sageattn
