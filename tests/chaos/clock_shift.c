/* libclock_shift.so: the fault harness's clock nemesis (tests/chaos/chaos.py), preloaded into
 * hamq-server (LD_PRELOAD). It moves the process's wall clock by an offset that the harness
 * changes while the process runs: CLOCK_REALTIME (and its coarse variant), gettimeofday and time
 * read the real wall clock plus the offset; the monotonic and other clocks are left alone, as NTP
 * or an operator stepping a machine's clock leaves them.
 *
 * The offset, in nanoseconds (a signed 64-bit integer in the machine's byte order), is the first 8
 * bytes of the file named by HAMQ_CLOCK_SHIFT_FILE, mapped at load; without the file the clock is
 * not moved. It allocates nothing and calls no dlsym (libfaketime does both, which recurses with
 * jemalloc): the real clock is glibc's __clock_gettime.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

extern int __clock_gettime(clockid_t clock, struct timespec* out);

static const volatile int64_t* offset_ns = NULL;

__attribute__((constructor)) static void map_offset(void) {
  const char* path = getenv("HAMQ_CLOCK_SHIFT_FILE");
  if (path == NULL) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  void* mapped = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (mapped != MAP_FAILED) offset_ns = mapped;
}

static void shift(struct timespec* time) {
  if (offset_ns == NULL) return;
  int64_t offset = *offset_ns;
  int64_t ns = (int64_t)time->tv_nsec + offset % 1000000000;
  time->tv_sec += offset / 1000000000 + ns / 1000000000;
  ns %= 1000000000;
  if (ns < 0) {
    ns += 1000000000;
    time->tv_sec -= 1;
  }
  time->tv_nsec = ns;
}

int clock_gettime(clockid_t clock, struct timespec* out) {
  int result = __clock_gettime(clock, out);
  if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) shift(out);
  return result;
}

int gettimeofday(struct timeval* restrict out, void* restrict zone) {
  (void)zone;
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME, &now) != 0) return -1;
  out->tv_sec = now.tv_sec;  // (glibc declares it never null)
  out->tv_usec = now.tv_nsec / 1000;
  return 0;
}

time_t time(time_t* out) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  if (out != NULL) *out = now.tv_sec;
  return now.tv_sec;
}
