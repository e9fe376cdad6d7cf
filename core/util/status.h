#pragma once
// Errors for expected failures (bad input from a user or a peer). A pl::Error carries one
// human-readable message that names what and where, e.g.
//   "scene.gltf: accessor 7 reads past the end of buffer 0".
// Result<T> holds either a value or an Error. Business logic returns these; it never throws
// across a library boundary.

#include <string>
#include <utility>
#include <variant>

#include "core/util/check.h"

namespace pl {

struct Error {
  std::string message;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    PL_CHECK_MSG(ok(), "Result::value() on error: %s", std::get<1>(v_).message.c_str());
    return std::get<0>(v_);
  }
  const T& value() const& {
    PL_CHECK_MSG(ok(), "Result::value() on error: %s", std::get<1>(v_).message.c_str());
    return std::get<0>(v_);
  }
  T&& value() && {
    PL_CHECK_MSG(ok(), "Result::value() on error: %s", std::get<1>(v_).message.c_str());
    return std::get<0>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    PL_CHECK(!ok());
    return std::get<1>(v_);
  }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Error error) : error_(std::move(error)), ok_(false) {}
  static Status okStatus() { return Status(); }

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    PL_CHECK(!ok_);
    return error_;
  }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace pl
