// NativeProgram: a struct bpf_program* borrowed from its object.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

Napi::Function BpfProgram::Define(Napi::Env env) {
  return DefineClass(env, "NativeProgram",
                     {
                         InstanceAccessor("name", &BpfProgram::Name, nullptr, napi_enumerable),
                         InstanceAccessor("fd", &BpfProgram::Fd, nullptr, napi_enumerable),
                         InstanceAccessor("id", &BpfProgram::Id, nullptr, napi_enumerable),
                         InstanceMethod("attachCgroup", &BpfProgram::AttachCgroup),
                         InstanceMethod("attachNetns", &BpfProgram::AttachNetns),
                         InstanceMethod("attachToMap", &BpfProgram::AttachToMap),
                         InstanceMethod("detachFromMap", &BpfProgram::DetachFromMap),
                         InstanceMethod("runMapIter", &BpfProgram::RunMapIter),
                     });
}

BpfProgram::BpfProgram(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BpfProgram>(info) {
  CheckConstructToken(info, "NativeProgram");
}

Napi::Object BpfProgram::New(Napi::Env env, Napi::Object owner, bpf_program* prog) {
  Napi::Object self = Addon::Get(env)->program_ctor.New({ConstructToken(env)});
  BpfProgram* w = Unwrap(self);
  w->owner_ = Napi::Persistent(owner);
  w->object_ = BpfObject::Unwrap(owner);
  w->prog_ = prog;
  w->name_ = bpf_program__name(prog);
  return self;
}

BpfProgram* BpfProgram::From(Napi::Env env, Napi::Value v, const char* fn) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(Addon::Get(env)->program_ctor.Value()))
    ThrowType(env, fn, "expected a NativeProgram");
  return Unwrap(v.As<Napi::Object>());
}

bpf_program* BpfProgram::Loaded(Napi::Env env, const char* fn) const {
  if (object_ == nullptr || object_->handle() == nullptr)
    Throw(env, kClosed, EBADF, fn, std::string(fn) + ": program '" + name_ + "' belongs to a closed BPF object");
  if (bpf_program__fd(prog_) < 0)
    Throw(env, kState, EINVAL, fn, std::string(fn) + ": program '" + name_ + "' is not loaded; call load() on its object first");
  return prog_;
}

Napi::Value BpfProgram::Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value BpfProgram::Fd(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (object_ != nullptr && object_->handle() != nullptr) fd = bpf_program__fd(prog_);
  return Napi::Number::New(info.Env(), fd < 0 ? -1 : fd);
}

Napi::Value BpfProgram::Id(const Napi::CallbackInfo& info) {
  // 0 until loaded; ids never change afterwards, so cache it.
  if (id_ == 0 && object_ != nullptr && object_->handle() != nullptr) {
    int fd = bpf_program__fd(prog_);
    if (fd >= 0) {
      bpf_prog_info pi{};
      uint32_t len = sizeof(pi);
      int ret = bpf_obj_get_info_by_fd(fd, &pi, &len);
      if (ret < 0) ThrowErrno(info.Env(), -ret, "bpf_obj_get_info_by_fd", "reading the id of program '" + name_ + "' failed");
      id_ = pi.id;
    }
  }
  return Napi::Number::New(info.Env(), id_);
}

Napi::Value BpfProgram::AttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int cgroup_fd = ArgFd(info, 0, "attachCgroup", "cgroupFd");
  bpf_program* prog = Loaded(env, "attachCgroup");
  LogCapture capture;
  bpf_link* link = bpf_program__attach_cgroup(prog, cgroup_fd);
  if (link == nullptr)
    ThrowErrno(env, errno, "bpf_program__attach_cgroup",
               "attaching program '" + name_ + "' (" + AttachTypeName(bpf_program__expected_attach_type(prog)) +
                   ") to cgroup fd " + std::to_string(cgroup_fd) + " failed",
               {}, Context::kFeature);
  return BpfLink::New(env, link);
}

Napi::Value BpfProgram::AttachNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "attachNetns", "netnsFd");
  bpf_program* prog = Loaded(env, "attachNetns");
  LogCapture capture;
  bpf_link* link = bpf_program__attach_netns(prog, netns_fd);
  if (link == nullptr)
    ThrowErrno(env, errno, "bpf_program__attach_netns",
               "attaching program '" + name_ + "' to network namespace fd " + std::to_string(netns_fd) + " failed",
               {}, Context::kFeature);
  return BpfLink::New(env, link);
}

Napi::Value BpfProgram::AttachToMap(const Napi::CallbackInfo& info) { return MapAttach(info, true); }
Napi::Value BpfProgram::DetachFromMap(const Napi::CallbackInfo& info) { return MapAttach(info, false); }

Napi::Value BpfProgram::MapAttach(const Napi::CallbackInfo& info, bool attach) {
  Napi::Env env = info.Env();
  const char* fn = attach ? "attachToMap" : "detachFromMap";
  int map_fd = ArgFd(info, 0, fn, "mapFd");
  std::string kind = ArgString(info, 1, fn, "kind");
  bpf_attach_type type;
  if (kind == "sk_msg_verdict")
    type = BPF_SK_MSG_VERDICT;
  else if (kind == "sk_skb_verdict")
    type = BPF_SK_SKB_VERDICT;
  else
    ThrowType(env, fn, "kind must be \"sk_msg_verdict\" or \"sk_skb_verdict\"");
  int prog_fd = bpf_program__fd(Loaded(env, fn));
  int ret = attach ? bpf_prog_attach(prog_fd, map_fd, type, 0) : bpf_prog_detach2(prog_fd, map_fd, type);
  if (ret < 0)
    ThrowErrno(env, -ret, attach ? "bpf_prog_attach" : "bpf_prog_detach2",
               std::string(attach ? "attaching" : "detaching") + " program '" + name_ + "' as " + kind +
                   (attach ? " to" : " from") + " map fd " + std::to_string(map_fd) + " failed",
               {}, Context::kFeature);
  return env.Undefined();
}

// An iterator program (SEC("iter/...")) over one map: attached, read to the
// end (each read runs the program on the next elements), detached. Returns
// the bytes the program wrote with bpf_seq_write/printf.
Napi::Value BpfProgram::RunMapIter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int map_fd = ArgFd(info, 0, "runMapIter", "mapFd");
  bpf_program* prog = Loaded(env, "runMapIter");
  union bpf_iter_link_info linfo{};
  linfo.map.map_fd = static_cast<uint32_t>(map_fd);
  LIBBPF_OPTS(bpf_iter_attach_opts, opts, .link_info = &linfo, .link_info_len = sizeof(linfo));
  LogCapture capture;
  bpf_link* link = bpf_program__attach_iter(prog, &opts);
  if (link == nullptr)
    ThrowErrno(env, errno, "bpf_program__attach_iter", "attaching iterator '" + name_ + "' to map fd " + std::to_string(map_fd) + " failed",
               {}, Context::kFeature);
  int iter_fd = bpf_iter_create(bpf_link__fd(link));
  if (iter_fd < 0) {
    int err = -iter_fd;
    bpf_link__destroy(link);
    ThrowErrno(env, err, "bpf_iter_create", "creating an iterator of '" + name_ + "' failed");
  }
  char buf[4096];
  size_t total = 0;
  ssize_t n;
  while ((n = read(iter_fd, buf, sizeof(buf))) > 0) total += static_cast<size_t>(n);
  int err = n < 0 ? errno : 0;
  close(iter_fd);
  bpf_link__destroy(link);
  if (err != 0) ThrowErrno(env, err, "read", "running iterator '" + name_ + "' failed");
  return Napi::Number::New(env, static_cast<double>(total));
}

}  // namespace bpfmesh
