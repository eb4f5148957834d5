// Errors thrown to JS and capture of libbpf's output (see src/bpf/native.ts,
// NativeError). Every throw in the addon goes through here.
#pragma once

#include <napi.h>

#include <string>

namespace bpfmesh {

// Stable codes (part of the contract with TypeScript).
extern const char* const kPermission;
extern const char* const kNotFound;
extern const char* const kExists;
extern const char* const kKernelFeature;
extern const char* const kVerifier;
extern const char* const kSyscall;
extern const char* const kBadArgument;
extern const char* const kClosed;  // the handle (or its object) was closed
extern const char* const kState;   // wrong lifecycle step: not loaded / already loaded

// How to read EINVAL & co: on attach or a feature probe they mean the kernel
// lacks something; elsewhere they are plain syscall failures.
enum class Context { kGeneric, kFeature };

// Collects libbpf's WARN/INFO output (which includes the verifier log on a
// rejected program) for the duration of one native call on this thread.
// Errors thrown while a capture is active carry it as `verifierLog`.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  const std::string& text() const { return text_; }
  void Append(const std::string& s) { text_ += s; }

 private:
  std::string text_;
  LogCapture* prev_;
};

// Installs the libbpf print callback; idempotent, process-wide.
void InstallLibbpfPrint();

// strerror that also knows libbpf's own codes and the kernel's ENOTSUPP.
std::string ErrnoText(int err);

[[noreturn]] void Throw(Napi::Env env, const char* code, int err, const char* syscall,
                        const std::string& message, const std::string& path = {});

// Picks the code from errno; message is "<what>: <strerror>[; hint]".
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& what,
                             const std::string& path = {}, Context ctx = Context::kGeneric);

// TypeError with code BPFMESH_E_BAD_ARGUMENT, for cheap argument type checks.
[[noreturn]] void ThrowType(Napi::Env env, const char* fn, const std::string& message);

// After a failed bpf_object__load: the rejected program's name (into *prog)
// and the verifier's reason line; empty when no program was rejected.
std::string DescribeLoadFailure(const std::string& log, std::string* prog);

// libbpf returns -errno from int APIs and sets errno for pointer ones.
inline int ErrFromRet(long ret) { return ret < 0 ? static_cast<int>(-ret) : 0; }

}  // namespace bpfmesh
