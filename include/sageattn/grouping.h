// Which scale a token uses. One formula covers every recipe of docs/CONTRACT.md §2:
//   g(n) = (n / block) * groups + ((n % block) / stride) % groups
// with block = the whole axis for "-1" recipes.
#pragma once
#include <cstdint>

namespace sageattn {

struct TokenGrouping {
  int64_t block = 0;   // tokens per block; <= 0 means the whole axis
  int64_t groups = 1;  // scale groups inside one block
  int64_t stride = 0;  // consecutive tokens that share a group; <= 0 means block/groups

  bool whole_axis() const { return block <= 0; }

  int64_t effective_block(int64_t n_tokens) const {
    return whole_axis() ? (n_tokens > 0 ? n_tokens : 1) : block;
  }
  int64_t effective_stride(int64_t n_tokens) const {
    const int64_t b = effective_block(n_tokens);
    return stride > 0 ? stride : (b + groups - 1) / groups;
  }
  int64_t num_groups(int64_t n_tokens) const {
    if (whole_axis()) return groups;  // one block, even when the axis is empty
    const int64_t b = effective_block(n_tokens);
    return ((n_tokens + b - 1) / b) * groups;
  }
  int64_t group_of(int64_t n, int64_t n_tokens) const {
    const int64_t b = effective_block(n_tokens);
    return (n / b) * groups + ((n % b) / effective_stride(n_tokens)) % groups;
  }
  // Whether every aligned run of `tile` tokens [t·tile, (t+1)·tile) lies in one group.
  bool constant_over_tiles(int64_t n_tokens, int64_t tile) const {
    const int64_t b = effective_block(n_tokens), s = effective_stride(n_tokens);
    const bool blocks_ok = b % tile == 0 || b >= n_tokens;
    const bool groups_ok = groups == 1 || s % tile == 0 || s >= b;
    return blocks_ok && groups_ok;
  }
};

}  // namespace sageattn
