#include "tensor_adapter.h"

#include <string>

#include "sageattn/error.h"

namespace sageattn {
namespace {

DType to_dtype(const DLDataType& dt, const char* name) {
  if (dt.lanes == 1) {
    if (dt.code == kDLFloat && dt.bits == 16) return DType::kF16;
    if (dt.code == kDLFloat && dt.bits == 32) return DType::kF32;
    if (dt.code == kDLBfloat && dt.bits == 16) return DType::kBF16;
    if (dt.code == kDLInt && dt.bits == 8) return DType::kI8;
    if (dt.code == kDLUInt && dt.bits == 8) return DType::kU8;
    if (dt.code == kDLBool && dt.bits == 8) return DType::kBool;
    if (dt.code == kDLFloat8_e4m3fn && dt.bits == 8) return DType::kFP8E4M3;
  }
  throw Error(ErrorKind::kType, std::string(name) + ": unsupported dtype (DLPack code " +
                                    std::to_string(dt.code) + ", " + std::to_string(dt.bits) +
                                    " bits, " + std::to_string(dt.lanes) + " lanes)");
}

}  // namespace

TensorRef to_tensor_ref(const DLTensor* t, const char* name) {
  if (t == nullptr) throw Error(ErrorKind::kValue, std::string(name) + ": missing tensor");
  if (t->device.device_type != kDLCPU) {
    throw Error(ErrorKind::kValue, std::string(name) + ": the CPU core needs CPU tensors (DLPack device type " +
                                       std::to_string(t->device.device_type) + ")");
  }
  if (t->ndim < 0 || t->ndim > TensorRef::kMaxDims) {
    throw Error(ErrorKind::kValue, std::string(name) + ": at most 4 dimensions are supported, got " +
                                       std::to_string(t->ndim));
  }
  TensorRef r;
  r.dtype = to_dtype(t->dtype, name);
  r.ndim = t->ndim;
  r.data = t->data == nullptr ? nullptr : static_cast<char*>(t->data) + t->byte_offset;
  int64_t compact = 1;
  for (int i = t->ndim - 1; i >= 0; --i) {
    r.shape[i] = t->shape[i];
    r.stride[i] = t->strides ? t->strides[i] : compact;
    compact *= t->shape[i];
  }
  return r;
}

}  // namespace sageattn
