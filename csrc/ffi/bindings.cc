// The C ABI of the operator core, through TVM-FFI: DLPack tensors in, results written
// into caller-allocated tensors. Every entry converts and re-checks its arguments (the
// core validates again) and maps sageattn::Error onto the matching Python exception.
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/function.h>
#include <tvm/ffi/string.h>

#include <string>

#include "sageattn/attention.h"
#include "sageattn/error.h"
#include "sageattn/isa.h"
#include "sageattn/quantize.h"
#include "tensor_adapter.h"

namespace {

using sageattn::Error;
using sageattn::ErrorKind;
using tvm::ffi::Optional;

template <typename F>
auto translate_errors(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    switch (e.kind()) {
      case ErrorKind::kValue: TVM_FFI_THROW(ValueError) << e.what();
      case ErrorKind::kType: TVM_FFI_THROW(TypeError) << e.what();
      case ErrorKind::kNotImplemented: TVM_FFI_THROW(NotImplementedError) << e.what();
      default: TVM_FFI_THROW(RuntimeError) << e.what();
    }
  } catch (const std::bad_alloc&) {
    TVM_FFI_THROW(MemoryError) << "sageattention: out of memory";
  }
}

sageattn::TokenGrouping grouping(int64_t block, int64_t groups, int64_t stride) {
  if (groups < 1) throw Error(ErrorKind::kValue, "quant_recipe: groups must be >= 1");
  return sageattn::TokenGrouping{block, groups, stride};
}

int threads_arg(int64_t n) {
  if (n < 1 || n > 1024) throw Error(ErrorKind::kValue, "num_threads: must be in [1, 1024]");
  return static_cast<int>(n);
}

sageattn::QuantDType qdtype(bool fp8) { return fp8 ? sageattn::QuantDType::kFP8 : sageattn::QuantDType::kInt8; }

void quantize_tokens(DLTensor* x, DLTensor* codes, DLTensor* scale, int64_t block, int64_t groups,
                     int64_t stride, bool per_tensor, bool fp8, Optional<DLTensor*> mean,
                     int64_t num_threads) {
  translate_errors([&] {
    sageattn::TokenQuantizeArgs a;
    a.x = sageattn::to_tensor_ref(x, "x");
    a.codes = sageattn::to_tensor_ref(codes, "codes");
    a.scale = sageattn::to_tensor_ref(scale, "scale");
    a.grouping = grouping(block, groups, stride);
    a.per_tensor = per_tensor;
    a.qdtype = qdtype(fp8);
    a.mean = sageattn::to_optional_ref(mean, "mean");
    a.num_threads = threads_arg(num_threads);
    sageattn::quantize_tokens(a);
  });
}

void channel_mean(DLTensor* x, DLTensor* mean, int64_t num_threads) {
  translate_errors([&] {
    sageattn::channel_mean(sageattn::to_tensor_ref(x, "k"), sageattn::to_tensor_ref(mean, "k_mean"),
                           threads_arg(num_threads));
  });
}

void quantize_channels(DLTensor* x, DLTensor* codes, DLTensor* scale, bool fp8, int64_t num_threads) {
  translate_errors([&] {
    sageattn::ChannelQuantizeArgs a;
    a.x = sageattn::to_tensor_ref(x, "v");
    a.codes = sageattn::to_tensor_ref(codes, "v_codes");
    a.scale = sageattn::to_tensor_ref(scale, "v_scale");
    a.qdtype = qdtype(fp8);
    a.num_threads = threads_arg(num_threads);
    sageattn::quantize_channels(a);
  });
}

// Groupings travel as (block, groups, stride) triples.
// pv_mode: sageattn::PvMode (0 = fp8 P·V, 1 = 16-bit V with fp16 P and no v_scale, 2 = int8).
// v_scale_mode: sageattn::VScaleMode (0 = one scale per V channel, 1 = per token group).
void attention_forward(DLTensor* q, DLTensor* k, DLTensor* v, DLTensor* q_scale, DLTensor* k_scale,
                       Optional<DLTensor*> v_scale, tvm::ffi::Array<int64_t> groupings, int64_t pv_mode,
                       int64_t v_scale_mode, bool qk_fp8, Optional<DLTensor*> k_mean, Optional<DLTensor*> mask,
                       double sm_scale, bool causal, DLTensor* out, Optional<DLTensor*> out_scale,
                       Optional<DLTensor*> lse, int64_t num_threads) {
  translate_errors([&] {
    if (groupings.size() != 9) throw Error(ErrorKind::kValue, "groupings: expected 9 integers");
    if (pv_mode < 0 || pv_mode >= sageattn::kPvModeCount)
      throw Error(ErrorKind::kValue, "pv_mode: expected 0 (fp8), 1 (16-bit) or 2 (int8)");
    if (v_scale_mode < 0 || v_scale_mode > 1)
      throw Error(ErrorKind::kValue, "v_scale_mode: expected 0 (per channel) or 1 (per token group)");
    sageattn::AttentionArgs a;
    a.q = sageattn::to_tensor_ref(q, "q");
    a.k = sageattn::to_tensor_ref(k, "k");
    a.v = sageattn::to_tensor_ref(v, "v");
    a.q_scale = sageattn::to_tensor_ref(q_scale, "q_scale");
    a.k_scale = sageattn::to_tensor_ref(k_scale, "k_scale");
    a.v_scale = sageattn::to_optional_ref(v_scale, "v_scale");
    a.q_grouping = grouping(groupings[0], groupings[1], groupings[2]);
    a.k_grouping = grouping(groupings[3], groupings[4], groupings[5]);
    a.v_grouping = grouping(groupings[6], groupings[7], groupings[8]);
    a.pv_mode = static_cast<sageattn::PvMode>(pv_mode);
    a.v_scale_mode = static_cast<sageattn::VScaleMode>(v_scale_mode);
    a.qk_dtype = qdtype(qk_fp8);
    a.k_mean = sageattn::to_optional_ref(k_mean, "k_mean");
    a.mask = sageattn::to_optional_ref(mask, "attn_mask");
    a.sm_scale = static_cast<float>(sm_scale);
    a.causal = causal;
    a.out = sageattn::to_tensor_ref(out, "out");
    a.out_scale = sageattn::to_optional_ref(out_scale, "out_scale");
    a.lse = sageattn::to_optional_ref(lse, "lse");
    a.num_threads = threads_arg(num_threads);
    sageattn::attention_forward(a);
  });
}

tvm::ffi::String cpu_isa() {
  return translate_errors([&] { return tvm::ffi::String(sageattn::isa_name(sageattn::active_isa())); });
}

void set_cpu_isa(tvm::ffi::String name) {
  translate_errors([&] { sageattn::set_isa_override(std::string(name)); });
}

// Every ISA this build contains, most capable first (the table of csrc/core/isa_table.cc).
tvm::ffi::Array<tvm::ffi::String> cpu_isa_names() {
  tvm::ffi::Array<tvm::ffi::String> r;
  for (const sageattn::IsaInfo& e : sageattn::isa_table()) r.push_back(tvm::ffi::String(e.name));
  return r;
}

bool cpu_isa_available(tvm::ffi::String name) {
  for (const sageattn::IsaInfo& e : sageattn::isa_table()) {
    if (std::string(name) == e.name) return e.available();
  }
  return false;
}

}  // namespace

TVM_FFI_DLL_EXPORT_TYPED_FUNC(quantize_tokens, quantize_tokens);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(channel_mean, channel_mean);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(quantize_channels, quantize_channels);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(attention_forward, attention_forward);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(cpu_isa, cpu_isa);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(set_cpu_isa, set_cpu_isa);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(cpu_isa_names, cpu_isa_names);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(cpu_isa_available, cpu_isa_available);
