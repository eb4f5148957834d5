// flock(2) for the node-wide install lock: the kernel drops the lock when
// the holder's file is closed, also when the holder dies, so no staleness
// guess is needed. flock has no timeout of its own; a waiter polls with
// LOCK_NB (1 ms, doubling to 10 ms) until the deadline.
#include <sys/file.h>
#include <time.h>

#include <cerrno>
#include <chrono>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

namespace {

void SleepMs(long ms) {
  struct timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace

// flockExclusive(fd, timeoutMs): true once held, false when the deadline passed first.
Napi::Value FlockExclusive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "flockExclusive", "fd");
  uint32_t timeout_ms = ArgU32(info, 1, "flockExclusive", "timeoutMs", 0);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  long pause = 1;
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
    int err = errno;
    if (err == EINTR) continue;
    if (err != EWOULDBLOCK)
      ThrowErrno(env, err, "flock", "locking fd " + std::to_string(fd) + " failed");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return Napi::Boolean::New(env, false);
    SleepMs(pause < left ? pause : static_cast<long>(left));
    if (pause < 10) pause *= 2;
  }
}

// flockRelease(fd): drops the lock (closing the fd does too).
Napi::Value FlockRelease(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "flockRelease", "fd");
  if (flock(fd, LOCK_UN) != 0) ThrowErrno(env, errno, "flock", "unlocking fd " + std::to_string(fd) + " failed");
  return env.Undefined();
}

}  // namespace bpfmesh
