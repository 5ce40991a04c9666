#include "common/verify.h"

#include <cstdio>
#include <cstdlib>

namespace hamq {

void verify_failed(const char* condition, const char* message, const char* file,
                   int line) noexcept {
  std::fprintf(stderr, "hamq: invariant broken at %s:%d: %s (%s)\n", file, line, message,
               condition);
  std::fflush(stderr);
  std::abort();
}

}  // namespace hamq
