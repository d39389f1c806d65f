// The one exception type the core throws. The binding layer maps `kind` onto the
// Python exception named in docs/CONTRACT.md §4, so the message must name the argument.
#pragma once
#include <stdexcept>
#include <string>

namespace sageattn {

enum class ErrorKind { kValue, kType, kNotImplemented, kRuntime };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind k, const std::string& m) : std::runtime_error(m), kind_(k) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

}  // namespace sageattn
