#include "sageattn/validate.h"

#include <algorithm>
#include <numeric>
#include <sstream>
#include <vector>

#include "sageattn/error.h"
#include "sageattn/grouping.h"

namespace sageattn {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF16: return "float16";
    case DType::kBF16: return "bfloat16";
    case DType::kF32: return "float32";
    case DType::kI8: return "int8";
    case DType::kFP8E4M3: return "float8_e4m3fn";
    case DType::kU8: return "uint8";
    case DType::kBool: return "bool";
  }
  return "unknown";
}

int dtype_size(DType t) {
  switch (t) {
    case DType::kF16:
    case DType::kBF16: return 2;
    case DType::kF32: return 4;
    default: return 1;
  }
}

void fail_value(const std::string& msg) { throw Error(ErrorKind::kValue, msg); }
void fail_type(const std::string& msg) { throw Error(ErrorKind::kType, msg); }

namespace {
std::string shape_str(const TensorRef& t) {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < t.ndim; ++i) os << (i ? ", " : "") << t.shape[i];
  os << ")";
  return os.str();
}
}  // namespace

void check_ndim(const TensorRef& t, int ndim, const char* name) {
  if (t.ndim != ndim) {
    std::ostringstream os;
    os << name << ": expected a " << ndim << "-D tensor, got " << t.ndim << "-D " << shape_str(t);
    fail_value(os.str());
  }
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) fail_value(std::string(name) + ": negative size");
  }
  if (t.numel() > 0 && t.data == nullptr) fail_value(std::string(name) + ": null data pointer");
}

void check_dtype(const TensorRef& t, std::initializer_list<DType> allowed, const char* name) {
  for (DType d : allowed) {
    if (t.dtype == d) return;
  }
  std::ostringstream os;
  os << name << ": dtype " << dtype_name(t.dtype) << " is not supported here (expected ";
  bool first = true;
  for (DType d : allowed) {
    os << (first ? "" : " or ") << dtype_name(d);
    first = false;
  }
  os << ")";
  fail_type(os.str());
}

void check_shape(const TensorRef& t, std::initializer_list<int64_t> shape, const char* name) {
  int i = 0;
  bool ok = static_cast<int>(shape.size()) == t.ndim;
  for (int64_t s : shape) {
    if (!ok) break;
    if (s >= 0 && t.shape[i] != s) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream os;
    os << name << ": expected shape (";
    i = 0;
    for (int64_t s : shape) os << (i++ ? ", " : "") << (s >= 0 ? std::to_string(s) : "*");
    os << "), got " << shape_str(t);
    fail_value(os.str());
  }
}

void check_broadcastable(const TensorRef& t, std::initializer_list<int64_t> shape,
                         const char* name) {
  int i = 0;
  bool ok = static_cast<int>(shape.size()) == t.ndim;
  for (int64_t s : shape) {
    if (!ok) break;
    if (t.shape[i] != s && t.shape[i] != 1) ok = false;
    ++i;
  }
  if (!ok) {
    std::ostringstream os;
    os << name << ": shape " << shape_str(t) << " does not broadcast to (";
    i = 0;
    for (int64_t s : shape) os << (i++ ? ", " : "") << s;
    os << ")";
    fail_value(os.str());
  }
  check_non_negative_strides(t, name);
}

void check_non_negative_strides(const TensorRef& t, const char* name) {
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] > 1 && t.stride[i] < 0) {
      fail_value(std::string(name) + ": negative strides are not supported");
    }
  }
}

void check_no_self_overlap(const TensorRef& t, const char* name) {
  check_non_negative_strides(t, name);
  if (t.numel() <= 1) return;
  // Sort the non-trivial dims by stride; each stride must exceed the extent spanned by
  // all smaller dims, which is exactly the condition for distinct indices to map to
  // distinct elements.
  std::vector<int> dims;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] > 1) dims.push_back(i);
  }
  std::sort(dims.begin(), dims.end(), [&](int a, int b) { return t.stride[a] < t.stride[b]; });
  int64_t extent = 1;
  for (int d : dims) {
    if (t.stride[d] < extent) {
      fail_value(std::string(name) + ": output elements overlap in memory (zero or overlapping strides)");
    }
    extent = t.stride[d] * (t.shape[d] - 1) + extent;
  }
}

void check_grouping(const TokenGrouping& g, const char* name) {
  constexpr int64_t kMaxBlock = int64_t{1} << 31;
  constexpr int64_t kMaxGroups = 1 << 16;
  if (g.groups < 1 || g.groups > kMaxGroups) {
    fail_value(std::string(name) + ": scale groups per block must be in [1, 65536], got " + std::to_string(g.groups));
  }
  if (g.whole_axis()) {
    if (g.block != -1 && g.block != 0) fail_value(std::string(name) + ": block must be -1 (whole axis) or positive");
    return;
  }
  if (g.block > kMaxBlock) fail_value(std::string(name) + ": block must be at most 2^31, got " + std::to_string(g.block));
  if (g.stride < 0 || g.stride > g.block) {
    fail_value(std::string(name) + ": group stride must be in [0, block], got " + std::to_string(g.stride));
  }
}

}  // namespace sageattn
