#include "errors.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace bpfmesh {

const char* const kPermission = "BPFMESH_E_PERMISSION";
const char* const kNotFound = "BPFMESH_E_NOT_FOUND";
const char* const kExists = "BPFMESH_E_EXISTS";
const char* const kKernelFeature = "BPFMESH_E_KERNEL_FEATURE";
const char* const kVerifier = "BPFMESH_E_VERIFIER";
const char* const kSyscall = "BPFMESH_E_SYSCALL";
const char* const kBadArgument = "BPFMESH_E_BAD_ARGUMENT";
const char* const kClosed = "BPFMESH_E_CLOSED";
const char* const kState = "BPFMESH_E_STATE";

namespace {

constexpr int kENOTSUPP = 524;  // kernel-internal, but bpf(2) leaks it

// libbpf's print callback is process-wide; the capture is per thread because
// libbpf prints on the calling thread (worker threads get their own).
thread_local LogCapture* t_capture = nullptr;

// Outside a capture: -1 silent; else forward levels <= this to stderr.
int g_forward_level = -1;

std::string Format(const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n <= 0) return {};
  std::string s(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(&s[0], s.size(), fmt, args);
  s.resize(static_cast<size_t>(n));
  return s;
}

int Print(enum libbpf_print_level level, const char* fmt, va_list args) {
  LogCapture* cap = t_capture;
  bool capture = cap != nullptr && level <= LIBBPF_INFO;  // debug is too noisy
  bool forward = static_cast<int>(level) <= g_forward_level;
  if (!capture && !forward) return 0;
  std::string msg = Format(fmt, args);
  if (capture) cap->Append(msg);
  if (forward) fputs(msg.c_str(), stderr);
  return 0;
}

// The last meaningful verifier line, i.e. the reason, right before the
// "processed N insns" summary.
std::string VerifierReason(const std::string& log) {
  size_t begin = log.find("-- BEGIN PROG LOAD LOG --");
  size_t end = log.find("-- END PROG LOAD LOG --");
  if (begin == std::string::npos || end == std::string::npos || end < begin) return {};
  std::string body = log.substr(begin, end - begin);
  std::string last;
  size_t pos = 0;
  while (pos < body.size()) {
    size_t nl = body.find('\n', pos);
    if (nl == std::string::npos) nl = body.size();
    std::string line = body.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty() || line.rfind("-- BEGIN", 0) == 0) continue;
    if (line.rfind("processed ", 0) == 0 || line.rfind("verification time", 0) == 0 ||
        line.rfind("stack depth", 0) == 0)
      break;
    last = line;
  }
  return last;
}

}  // namespace

LogCapture::LogCapture() : prev_(t_capture) { t_capture = this; }
LogCapture::~LogCapture() { t_capture = prev_; }

void InstallLibbpfPrint() {
  static std::once_flag once;
  std::call_once(once, [] {
    // BPFMESH_LIBBPF_DEBUG=1 forwards warnings, =debug everything.
    const char* env = getenv("BPFMESH_LIBBPF_DEBUG");
    if (env != nullptr && *env != '\0' && strcmp(env, "0") != 0)
      g_forward_level = strcmp(env, "debug") == 0 ? LIBBPF_DEBUG : LIBBPF_WARN;
    libbpf_set_print(Print);
  });
}

std::string ErrnoText(int err) {
  if (err == kENOTSUPP) return "Operation not supported (ENOTSUPP)";
  char buf[128];
  if (libbpf_strerror(err, buf, sizeof(buf)) == 0) return buf;
  return "error " + std::to_string(err);
}

void Throw(Napi::Env env, const char* code, int err, const char* syscall,
           const std::string& message, const std::string& path) {
  Napi::Error error = Napi::Error::New(env, message);
  Napi::Object obj = error.Value();
  obj.Set("code", code);
  obj.Set("errno", err);
  obj.Set("syscall", syscall);
  if (t_capture != nullptr && !t_capture->text().empty())
    obj.Set("verifierLog", t_capture->text());
  if (!path.empty()) obj.Set("path", path);
  throw error;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& what,
                const std::string& path, Context ctx) {
  const char* code = kSyscall;
  const char* hint = "";
  switch (err) {
    case EPERM:
    case EACCES:
      code = kPermission;
      hint = "; needs root or CAP_BPF+CAP_NET_ADMIN (+CAP_SYS_ADMIN for some attach types)";
      break;
    case ENOENT:
      code = kNotFound;
      break;
    case EEXIST:
      code = kExists;
      hint = "; remove it first or use another path";
      break;
    case EINVAL:
    case EOPNOTSUPP:
    case kENOTSUPP:
    case E2BIG:
    case ENOPROTOOPT:
      if (ctx == Context::kFeature) {
        code = kKernelFeature;
        hint = "; the running kernel does not support this (check its version and BPF config)";
      }
      break;
    default:
      break;
  }
  Throw(env, code, err, syscall, what + ": " + ErrnoText(err) + hint, path);
}

void ThrowType(Napi::Env env, const char* fn, const std::string& message) {
  Napi::Error error = Napi::TypeError::New(env, std::string(fn) + ": " + message);
  Napi::Object obj = error.Value();
  obj.Set("code", kBadArgument);
  obj.Set("errno", EINVAL);
  obj.Set("syscall", fn);
  throw error;
}

// Used by object.cc to describe a failed bpf_object__load.
std::string DescribeLoadFailure(const std::string& log, std::string* prog) {
  // libbpf 1.1: "libbpf: prog 'NAME': BPF program load failed: ..."
  static const char kMarker[] = "': BPF program load failed";
  size_t at = log.find(kMarker);
  if (at == std::string::npos) return {};
  size_t start = log.rfind("prog '", at);
  if (start == std::string::npos) return {};
  *prog = log.substr(start + 6, at - (start + 6));
  return VerifierReason(log);
}

}  // namespace bpfmesh
