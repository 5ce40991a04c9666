// Result<T, E>: the value of an operation that can fail for operating reasons.
//
// Operating errors (bad input from a peer, I/O failure, full disk) are returned, never thrown, and
// the caller must look at them: the type is [[nodiscard]]. A small stand-in for C++23's
// std::expected, which the project's compiler (g++ 12 in C++20 mode) does not offer.
#pragma once

#include <type_traits>
#include <utility>
#include <variant>

#include "common/verify.h"

namespace hamq {

template <class E>
struct Unexpected {
  E error;
};

template <class E>
Unexpected<std::decay_t<E>> unexpected(E&& error) {
  return Unexpected<std::decay_t<E>>{std::forward<E>(error)};
}

template <class T, class E>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit
  Result(Unexpected<E> failure)                                          // NOLINT: implicit
      : state_(std::in_place_index<1>, std::move(failure.error)) {}

  bool ok() const { return state_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    HAMQ_VERIFY(ok(), "value() of a failed Result");
    return std::get<0>(state_);
  }
  const T& value() const& {
    HAMQ_VERIFY(ok(), "value() of a failed Result");
    return std::get<0>(state_);
  }
  T&& value() && {
    HAMQ_VERIFY(ok(), "value() of a failed Result");
    return std::get<0>(std::move(state_));
  }
  const E& error() const {
    HAMQ_VERIFY(!ok(), "error() of a successful Result");
    return std::get<1>(state_);
  }
  E& error() {
    HAMQ_VERIFY(!ok(), "error() of a successful Result");
    return std::get<1>(state_);
  }

  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, E> state_;
};

// Result<void, E>: success carries nothing.
struct Ok {};

template <class E>
class [[nodiscard]] Result<void, E> {
 public:
  Result() = default;
  Result(Ok) {}  // NOLINT: implicit
  Result(Unexpected<E> failure) : error_(std::move(failure.error)), failed_(true) {}  // NOLINT

  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  const E& error() const {
    HAMQ_VERIFY(failed_, "error() of a successful Result");
    return error_;
  }

 private:
  E error_{};
  bool failed_ = false;
};

}  // namespace hamq
