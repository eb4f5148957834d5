// Kernel feature probes for `bpfmesh check` (src/check/): each asks the
// running kernel, never the version number. Program and map types go
// through libbpf's probes, helpers through libbpf's method (see
// ProbeHelper); attach types load a two-instruction program with the expected attach type (the kernel refuses attach types it
// does not know for that program type) and, for the sockmap verdicts, attach
// it to a private SOCKHASH. Nothing here touches a pod or a pin, except
// pinLayoutMarker, which writes the marker src/check/layout-marker.ts reads.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

namespace {

// Closes an fd when the scope ends, whatever is thrown.
struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

template <typename T>
bool EnumByName(const std::string& name, const char* (*str)(T), uint32_t limit, T* out) {
  for (uint32_t t = 0; t < limit; t++) {
    const char* s = str(static_cast<T>(t));
    if (s != nullptr && name == s) {
      *out = static_cast<T>(t);
      return true;
    }
  }
  return false;
}

bpf_prog_type ProgTypeArg(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  std::string name = ArgString(info, i, fn, "progType");
  bpf_prog_type t;
  if (!EnumByName(name, libbpf_bpf_prog_type_str, 256, &t) || t == BPF_PROG_TYPE_UNSPEC)
    Throw(info.Env(), kBadArgument, EINVAL, fn, std::string(fn) + ": unknown BPF program type '" + name + "'");
  return t;
}

bpf_attach_type AttachTypeArg(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  std::string name = ArgString(info, i, fn, "attachType");
  bpf_attach_type t;
  if (!EnumByName(name, libbpf_bpf_attach_type_str, 256, &t))
    Throw(info.Env(), kBadArgument, EINVAL, fn, std::string(fn) + ": unknown attach type '" + name + "'");
  return t;
}

// The helpers bpf/*.bpf.c call, by the name the TS side uses (the
// BPF_FUNC_ suffix). libbpf has no name table for helpers.
struct Helper {
  const char* name;
  bpf_func_id id;
};
const Helper kHelpers[] = {
    {"map_lookup_elem", BPF_FUNC_map_lookup_elem},
    {"map_update_elem", BPF_FUNC_map_update_elem},
    {"map_delete_elem", BPF_FUNC_map_delete_elem},
    {"get_current_uid_gid", BPF_FUNC_get_current_uid_gid},
    {"get_socket_cookie", BPF_FUNC_get_socket_cookie},
    {"get_netns_cookie", BPF_FUNC_get_netns_cookie},
    {"sk_lookup_tcp", BPF_FUNC_sk_lookup_tcp},
    {"sk_release", BPF_FUNC_sk_release},
    {"sk_assign", BPF_FUNC_sk_assign},
    {"sock_hash_update", BPF_FUNC_sock_hash_update},
    {"sock_ops_cb_flags_set", BPF_FUNC_sock_ops_cb_flags_set},
    {"msg_redirect_hash", BPF_FUNC_msg_redirect_hash},
    {"msg_redirect_map", BPF_FUNC_msg_redirect_map},  // bpf/probe.bpf.c, the socket-path probe
    {"sk_storage_get", BPF_FUNC_sk_storage_get},
    {"sk_storage_delete", BPF_FUNC_sk_storage_delete},
    {"skc_to_tcp_sock", BPF_FUNC_skc_to_tcp_sock},
    {"skb_adjust_room", BPF_FUNC_skb_adjust_room},
    {"probe_read_kernel", BPF_FUNC_probe_read_kernel},
    // bpfmesh observe (bpf/observe.h)
    {"ktime_get_ns", BPF_FUNC_ktime_get_ns},
    {"ringbuf_reserve", BPF_FUNC_ringbuf_reserve},
    {"ringbuf_submit", BPF_FUNC_ringbuf_submit},
    {"ringbuf_query", BPF_FUNC_ringbuf_query},
    {"get_current_pid_tgid", BPF_FUNC_get_current_pid_tgid},
    {"get_current_cgroup_id", BPF_FUNC_get_current_cgroup_id},
    {"get_current_comm", BPF_FUNC_get_current_comm},
};

// r0 = 1; exit: "allow" for cgroup programs, SK_PASS for sk_msg/sk_skb/sk_lookup.
const bpf_insn kReturnOne[] = {
    {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
    {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
};

Napi::Value ProbeMapType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "probeMapType", "type");
  bpf_map_type t;
  if (!EnumByName(name, libbpf_bpf_map_type_str, 256, &t) || t == BPF_MAP_TYPE_UNSPEC)
    Throw(env, kBadArgument, EINVAL, "libbpf_probe_bpf_map_type", "probeMapType: unknown map type '" + name + "'");
  LogCapture capture;
  int ret = libbpf_probe_bpf_map_type(t, nullptr);
  if (ret < 0)
    ThrowErrno(env, -ret, "libbpf_probe_bpf_map_type", "probing map type '" + name + "' failed", {}, Context::kFeature);
  return Napi::Boolean::New(env, ret == 1);
}

// libbpf_probe_bpf_helper (1.1) takes a load that fails with anything but
// "invalid func" / "unknown func" in the verifier log as "supported"; kernels
// since 6.2 say "program of this type cannot use helper" instead, so 1.1
// answers yes to every helper there. Its method is kept, with the newer
// wording, and the program gets the attach type bpfmesh uses (some helpers
// depend on it).
int ProbeHelperLoad(bpf_prog_type prog, bpf_attach_type at, bpf_func_id id, std::string* log) {
  const bpf_insn insns[] = {
      {BPF_JMP | BPF_CALL, 0, 0, 0, static_cast<int32_t>(id)},
      {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 1},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  std::vector<char> buf(16384, '\0');
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = at, .log_level = 1, .log_size = static_cast<uint32_t>(buf.size()),
              .log_buf = buf.data());
  int fd = bpf_prog_load(prog, "bpfmesh_probe", "GPL", insns, sizeof(insns) / sizeof(insns[0]), &opts);
  if (fd >= 0) close(fd);
  *log = buf.data();
  return fd >= 0 ? 0 : fd;
}

Napi::Value ProbeHelper(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_prog_type prog = ProgTypeArg(info, 0, "probeHelper");
  std::string name = ArgString(info, 1, "probeHelper", "helper");
  bpf_attach_type at = static_cast<bpf_attach_type>(0);
  if (!info[2].IsUndefined()) at = AttachTypeArg(info, 2, "probeHelper");
  for (const Helper& h : kHelpers) {
    if (name != h.name) continue;
    std::string log;
    int ret = ProbeHelperLoad(prog, at, h.id, &log);
    // EACCES is also the verifier's answer to the probe's unset arguments; only without a log is it the caller's.
    if (ret == -EPERM || (ret == -EACCES && log.empty())) ThrowErrno(env, -ret, "bpf_prog_load", "probing helper bpf_" + name + " failed");
    if (ret < 0 && log.empty())
      ThrowErrno(env, -ret, "bpf_prog_load", "probing helper bpf_" + name + ": the probe program did not reach the verifier (wrong attach type?)", {},
                 Context::kFeature);
    bool refused = log.find("invalid func ") != std::string::npos || log.find("unknown func ") != std::string::npos ||
                   log.find("cannot use helper") != std::string::npos;
    return Napi::Boolean::New(env, !refused);
  }
  Throw(env, kBadArgument, EINVAL, "bpf_prog_load", "probeHelper: no probe for helper '" + name + "'");
}

// Loads kReturnOne as prog with expected_attach_type at; returns the fd or -errno.
int LoadTrivial(bpf_prog_type prog, bpf_attach_type at) {
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = at);
  return bpf_prog_load(prog, "bpfmesh_probe", "GPL", kReturnOne, sizeof(kReturnOne) / sizeof(kReturnOne[0]), &opts);
}

// true: the kernel loads a program of this type for this attach type (and,
// for the sockmap verdicts, attaches it to a SOCKHASH). false: EINVAL & co.
Napi::Value ProbeAttachType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_prog_type prog = ProgTypeArg(info, 0, "probeAttachType");
  bpf_attach_type at = AttachTypeArg(info, 1, "probeAttachType");
  auto verdict = [&](int err, const char* call) -> Napi::Value {
    if (err == EPERM || err == EACCES) ThrowErrno(env, err, call, "probing attach type " + AttachTypeName(at) + " failed");
    return Napi::Boolean::New(env, false);
  };
  Fd p(LoadTrivial(prog, at));
  if (p.fd < 0) return verdict(-p.fd, "bpf_prog_load");
  if (at != BPF_SK_MSG_VERDICT && at != BPF_SK_SKB_VERDICT) return Napi::Boolean::New(env, true);
  Fd map(bpf_map_create(BPF_MAP_TYPE_SOCKHASH, "bpfmesh_probe", 4, 8, 1, nullptr));
  if (map.fd < 0) return verdict(-map.fd, "bpf_map_create");
  int ret = bpf_prog_attach(p.fd, map.fd, at, 0);
  if (ret < 0) return verdict(-ret, "bpf_prog_attach");
  bpf_prog_detach2(p.fd, map.fd, at);
  return Napi::Boolean::New(env, true);
}

// Programs attached directly to a cgroup or netns fd for one attach type
// (BPF_F_QUERY_EFFECTIVE on request: also those inherited from parent cgroups).
Napi::Value QueryPrograms(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int target = ArgFd(info, 0, "queryPrograms", "targetFd");
  bpf_attach_type at = AttachTypeArg(info, 1, "queryPrograms");
  bool effective = info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  std::vector<uint32_t> ids(64);
  uint32_t count = static_cast<uint32_t>(ids.size());
  uint32_t attach_flags = 0;
  int ret = bpf_prog_query(target, at, effective ? BPF_F_QUERY_EFFECTIVE : 0, &attach_flags, ids.data(), &count);
  if (ret < 0)
    ThrowErrno(env, -ret, "bpf_prog_query", "querying the " + AttachTypeName(at) + " programs of fd " + std::to_string(target) + " failed",
               {}, Context::kFeature);
  Napi::Array out = Napi::Array::New(env);
  for (uint32_t i = 0; i < count && i < ids.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", ids[i]);
    std::string name;
    Fd fd(bpf_prog_get_fd_by_id(ids[i]));
    if (fd.fd >= 0) {
      bpf_prog_info pi{};
      uint32_t len = sizeof(pi);
      if (bpf_obj_get_info_by_fd(fd.fd, &pi, &len) == 0) name = pi.name;
    }
    o.Set("name", name);
    out.Set(i, o);
  }
  return out;
}

[[noreturn]] void ThrowSock(Napi::Env env, const char* call, const std::string& what) {
  ThrowErrno(env, errno, call, "sockmapFionread: " + what);
}

// The 929e30f93125 behaviour, measured: a loopback TCP connection whose
// reading end sits in a private SOCKHASH (with a pass-through SK_SKB verdict
// on the map when withSkbVerdict), 4096 bytes written to it, and what
// FIONREAD says once MSG_PEEK sees them all. FIONREAD itself is what is
// tested, so readiness comes from MSG_PEEK. Bounded: 2 s.
Napi::Value SockmapFionread(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool with_verdict = info[0].IsBoolean() && info[0].As<Napi::Boolean>().Value();
  constexpr int kPayload = 4096;

  Fd map(bpf_map_create(BPF_MAP_TYPE_SOCKHASH, "bpfmesh_probe", 4, 8, 2, nullptr));
  if (map.fd < 0) ThrowErrno(env, -map.fd, "bpf_map_create", "sockmapFionread: creating a SOCKHASH failed", {}, Context::kFeature);
  Fd verdict;
  if (with_verdict) {
    verdict.fd = LoadTrivial(BPF_PROG_TYPE_SK_SKB, BPF_SK_SKB_VERDICT);
    if (verdict.fd < 0) ThrowErrno(env, -verdict.fd, "bpf_prog_load", "sockmapFionread: loading an SK_SKB verdict failed", {}, Context::kFeature);
    int ret = bpf_prog_attach(verdict.fd, map.fd, BPF_SK_SKB_VERDICT, 0);
    if (ret < 0) ThrowErrno(env, -ret, "bpf_prog_attach", "sockmapFionread: attaching the SK_SKB verdict failed", {}, Context::kFeature);
  }

  Fd lsn(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (lsn.fd < 0) ThrowSock(env, "socket", "socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(lsn.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(lsn.fd, 1) < 0 ||
      getsockname(lsn.fd, reinterpret_cast<sockaddr*>(&addr), &len) < 0)
    ThrowSock(env, "listen", "listening on 127.0.0.1 failed");
  Fd reader(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (reader.fd < 0 || connect(reader.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0)
    ThrowSock(env, "connect", "connecting to 127.0.0.1 failed");
  pollfd pl{lsn.fd, POLLIN, 0};
  if (poll(&pl, 1, 2000) != 1) ThrowSock(env, "poll", "no connection to accept within 2 s");
  Fd writer(accept4(lsn.fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (writer.fd < 0) ThrowSock(env, "accept4", "accept failed");

  uint32_t key = 1;
  uint64_t value = static_cast<uint64_t>(reader.fd);
  int ret = bpf_map_update_elem(map.fd, &key, &value, BPF_ANY);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_update_elem", "sockmapFionread: putting the socket into the SOCKHASH failed", {}, Context::kFeature);

  std::vector<char> buf(kPayload, 'x');
  if (send(writer.fd, buf.data(), buf.size(), MSG_NOSIGNAL) != kPayload) ThrowSock(env, "send", "writing the probe bytes failed");
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  ssize_t peeked = 0;
  for (;;) {
    peeked = recv(reader.fd, buf.data(), buf.size(), MSG_PEEK | MSG_DONTWAIT);
    if (peeked == kPayload || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  int avail = -1;
  if (ioctl(reader.fd, FIONREAD, &avail) < 0) ThrowSock(env, "ioctl(FIONREAD)", "FIONREAD failed");
  Napi::Object out = Napi::Object::New(env);
  out.Set("written", kPayload);
  out.Set("peeked", static_cast<double>(peeked < 0 ? 0 : peeked));
  out.Set("fionread", avail);
  return out;
}

// A pinned one-element ARRAY map whose u32 value is the pin layout version.
Napi::Value PinLayoutMarker(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "pinLayoutMarker", "path");
  uint32_t version = ArgU32(info, 1, "pinLayoutMarker", "version", 0);
  Fd map(bpf_map_create(BPF_MAP_TYPE_ARRAY, "layout_version", 4, 4, 1, nullptr));
  if (map.fd < 0) ThrowErrno(env, -map.fd, "bpf_map_create", "pinLayoutMarker: creating the marker map failed");
  uint32_t key = 0;
  int ret = bpf_map_update_elem(map.fd, &key, &version, BPF_ANY);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_update_elem", "pinLayoutMarker: writing the version failed");
  ret = bpf_obj_pin(map.fd, path.c_str());
  if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_pin", "pinLayoutMarker: pinning " + path + " failed", path);
  return env.Undefined();
}

}  // namespace

void RegisterProbes(Napi::Env env, Napi::Object exports) {
  exports.Set("probeMapType", Napi::Function::New(env, ProbeMapType, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New(env, ProbeHelper, "probeHelper"));
  exports.Set("probeAttachType", Napi::Function::New(env, ProbeAttachType, "probeAttachType"));
  exports.Set("queryPrograms", Napi::Function::New(env, QueryPrograms, "queryPrograms"));
  exports.Set("sockmapFionread", Napi::Function::New(env, SockmapFionread, "sockmapFionread"));
  exports.Set("pinLayoutMarker", Napi::Function::New(env, PinLayoutMarker, "pinLayoutMarker"));
}

}  // namespace bpfmesh
