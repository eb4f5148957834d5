// Module entry: per-environment state, cleanup, shared helpers and the small
// free functions of the binding.
#include "addon.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <cmath>
#include <vector>

#include "errors.h"

namespace bpfmesh {

namespace {

int g_token;  // address identifies ConstructToken()

// Runs when the environment goes away, before the finalizers: closes what
// JS left open. Unpinned links detach as their fd closes; pinned ones stay.
void Cleanup(void* arg) {
  Addon* addon = static_cast<Addon*>(arg);
  addon->hook_ran = true;
  std::vector<Resource*> live(addon->live.begin(), addon->live.end());
  for (Resource* r : live) r->Release();
}

std::string EnumName(const char* s, uint32_t t) {
  return s != nullptr ? std::string(s) : "unknown(" + std::to_string(t) + ")";
}

Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowErrno(info.Env(), -n, "libbpf_num_possible_cpus", "reading /sys/devices/system/cpu/possible failed");
  return Napi::Number::New(info.Env(), n);
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), std::to_string(libbpf_major_version()) + "." +
                                           std::to_string(libbpf_minor_version()));
}

Napi::Value ProbeProgType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "probeProgType", "type");
  // Any name libbpf knows, so the TS side is not limited to a fixed list.
  for (uint32_t t = 1; t < 256; t++) {
    const char* s = libbpf_bpf_prog_type_str(static_cast<enum bpf_prog_type>(t));
    if (s == nullptr || name != s) continue;
    LogCapture capture;
    int ret = libbpf_probe_bpf_prog_type(static_cast<enum bpf_prog_type>(t), nullptr);
    if (ret < 0)
      ThrowErrno(env, -ret, "libbpf_probe_bpf_prog_type", "probing BPF program type '" + name + "' failed",
                 {}, Context::kFeature);
    return Napi::Boolean::New(env, ret == 1);
  }
  Throw(env, kBadArgument, EINVAL, "libbpf_probe_bpf_prog_type",
        "unknown BPF program type '" + name + "' (use libbpf's name, e.g. \"cgroup_sock_addr\")");
}

}  // namespace

Addon::Addon(napi_env e) : env(e) { napi_add_env_cleanup_hook(env, Cleanup, this); }

Addon::~Addon() {
  if (!hook_ran) napi_remove_env_cleanup_hook(env, Cleanup, this);
}

Napi::Value ConstructToken(Napi::Env env) { return Napi::External<int>::New(env, &g_token); }

void CheckConstructToken(const Napi::CallbackInfo& info, const char* cls) {
  if (info.Length() < 1 || !info[0].IsExternal() || info[0].As<Napi::External<int>>().Data() != &g_token)
    ThrowType(info.Env(), cls, "not constructible from JS; use the binding's functions");
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (!info[i].IsString()) ThrowType(info.Env(), fn, std::string(name) + " must be a string");
  std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s.empty() || s.find('\0') != std::string::npos)
    ThrowType(info.Env(), fn, std::string(name) + " must be a non-empty string without NUL");
  return s;
}

int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (!info[i].IsNumber()) ThrowType(info.Env(), fn, std::string(name) + " must be a file descriptor");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 0x7fffffff) || std::floor(d) != d)
    ThrowType(info.Env(), fn, std::string(name) + " must be a file descriptor");
  return static_cast<int>(d);
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name,
                uint32_t dflt) {
  if (info[i].IsUndefined()) return dflt;
  if (!info[i].IsNumber()) ThrowType(info.Env(), fn, std::string(name) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 0xffffffffu) || std::floor(d) != d)
    ThrowType(info.Env(), fn, std::string(name) + " must be an unsigned 32-bit integer");
  return static_cast<uint32_t>(d);
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* fn,
                                const char* name) {
  if (!info[i].IsBuffer()) ThrowType(info.Env(), fn, std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

std::string ProgTypeName(uint32_t t) {
  return EnumName(libbpf_bpf_prog_type_str(static_cast<enum bpf_prog_type>(t)), t);
}
std::string AttachTypeName(uint32_t t) {
  return EnumName(libbpf_bpf_attach_type_str(static_cast<enum bpf_attach_type>(t)), t);
}
std::string MapTypeName(uint32_t t) {
  return EnumName(libbpf_bpf_map_type_str(static_cast<enum bpf_map_type>(t)), t);
}
std::string LinkTypeName(uint32_t t) {
  return EnumName(libbpf_bpf_link_type_str(static_cast<enum bpf_link_type>(t)), t);
}

}  // namespace bpfmesh

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  using namespace bpfmesh;
  InstallLibbpfPrint();
  Addon* addon = new Addon(env);
  env.SetInstanceData(addon);
  addon->object_ctor = Napi::Persistent(BpfObject::Define(env));
  addon->program_ctor = Napi::Persistent(BpfProgram::Define(env));
  addon->map_ctor = Napi::Persistent(BpfMap::Define(env));
  addon->link_ctor = Napi::Persistent(BpfLink::Define(env));

  exports.Set("openObject", Napi::Function::New(env, BpfObject::Open, "openObject"));
  exports.Set("openPinnedMap", Napi::Function::New(env, BpfMap::OpenPinned, "openPinnedMap"));
  exports.Set("openPinnedLink", Napi::Function::New(env, BpfLink::OpenPinned, "openPinnedLink"));
  exports.Set("pinnedKind", Napi::Function::New(env, PinnedKind, "pinnedKind"));
  exports.Set("pinnedProgramId", Napi::Function::New(env, PinnedProgramId, "pinnedProgramId"));
  exports.Set("unpin", Napi::Function::New(env, Unpin, "unpin"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
  exports.Set("netnsCookie", Napi::Function::New(env, NetnsCookie, "netnsCookie"));
  exports.Set("netnsAddresses", Napi::Function::New(env, NetnsAddresses, "netnsAddresses"));
  exports.Set("socketCookie", Napi::Function::New(env, SocketCookie, "socketCookie"));
  exports.Set("tcpLoopbackPair", Napi::Function::New(env, TcpLoopbackPair, "tcpLoopbackPair"));
  exports.Set("socketMeminfo", Napi::Function::New(env, SocketMeminfo, "socketMeminfo"));
  exports.Set("takeSocket", Napi::Function::New(env, TakeSocket, "takeSocket"));
  exports.Set("socketInNetns", Napi::Function::New(env, SocketInNetns, "socketInNetns"));
  exports.Set("listenInNetns", Napi::Function::New(env, ListenInNetns, "listenInNetns"));
  exports.Set("sysctlInNetns", Napi::Function::New(env, SysctlInNetns, "sysctlInNetns"));
  exports.Set("flockExclusive", Napi::Function::New(env, FlockExclusive, "flockExclusive"));
  exports.Set("flockRelease", Napi::Function::New(env, FlockRelease, "flockRelease"));
  exports.Set("numPossibleCpus", Napi::Function::New(env, NumPossibleCpus, "numPossibleCpus"));
  exports.Set("libbpfVersion", Napi::Function::New(env, LibbpfVersion, "libbpfVersion"));
  exports.Set("probeProgType", Napi::Function::New(env, ProbeProgType, "probeProgType"));
  RegisterProbes(env, exports);
  RegisterRingReader(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(bpfmesh, Init)
