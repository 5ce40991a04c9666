// Checks for programmer errors: a broken invariant crashes loudly with a message.
//
// HAMQ_VERIFY stays on in release builds. Use it for conditions that only a bug in hamq can make
// false, never for anything a peer, a file or the operating system can cause: those are operating
// errors and travel as values (see result.h).
#pragma once

namespace hamq {

[[noreturn]] void verify_failed(const char* condition, const char* message, const char* file,
                                int line) noexcept;

}  // namespace hamq

#define HAMQ_VERIFY(condition, message)                                 \
  do {                                                                  \
    if (!(condition)) [[unlikely]] {                                    \
      ::hamq::verify_failed(#condition, (message), __FILE__, __LINE__); \
    }                                                                   \
  } while (false)
