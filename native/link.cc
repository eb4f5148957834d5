// NativeLink: a struct bpf_link* (fd-based: cgroup, netns, or opened from a pin).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

Napi::Function BpfLink::Define(Napi::Env env) {
  return DefineClass(env, "NativeLink",
                     {
                         InstanceAccessor("fd", &BpfLink::FdGetter, nullptr, napi_enumerable),
                         InstanceMethod("info", &BpfLink::Info),
                         InstanceMethod("pin", &BpfLink::Pin),
                         InstanceMethod("updateProgram", &BpfLink::UpdateProgram),
                         InstanceMethod("detach", &BpfLink::Detach),
                         InstanceMethod("close", &BpfLink::Close),
                     });
}

BpfLink::BpfLink(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<BpfLink>(info), addon_(Addon::Get(info.Env())) {
  CheckConstructToken(info, "NativeLink");
}

BpfLink::~BpfLink() { Release(); }

void BpfLink::Release() {
  if (link_ == nullptr) return;
  // For fd-based links this only closes the fd: the attachment ends unless
  // a bpffs pin still holds the link (libbpf 1.1 never calls LINK_DETACH here).
  bpf_link__destroy(link_);
  link_ = nullptr;
  addon_->Untrack(this);
}

Napi::Object BpfLink::New(Napi::Env env, bpf_link* link) {
  Napi::Object self;
  try {
    self = Addon::Get(env)->link_ctor.New({ConstructToken(env)});
  } catch (...) {
    bpf_link__destroy(link);
    throw;
  }
  BpfLink* w = Unwrap(self);
  w->link_ = link;
  w->addon_->Track(w);
  return self;
}

Napi::Value BpfLink::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "openPinnedLink", "path");
  // bpf_link__open does not check what the pin is; do it first.
  int fd = ObjGet(env, path, "openPinnedLink");
  FdInfo fi = ReadFdInfo(fd);
  close(fd);
  if (fi.kind != "link")
    Throw(env, kBadArgument, EINVAL, "bpf_obj_get", path + " is a pinned " + fi.kind + ", not a link", path);
  LogCapture capture;
  bpf_link* link = bpf_link__open(path.c_str());
  if (link == nullptr) ThrowErrno(env, errno, "bpf_link__open", "opening the pinned link " + path + " failed", path);
  return New(env, link);
}

bpf_link* BpfLink::Checked(Napi::Env env, const char* fn) const {
  if (link_ == nullptr) Throw(env, kClosed, EBADF, fn, std::string(fn) + ": the link is closed");
  return link_;
}

Napi::Value BpfLink::FdGetter(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), link_ == nullptr ? -1 : bpf_link__fd(link_));
}

Napi::Value BpfLink::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = bpf_link__fd(Checked(env, "bpf_obj_get_info_by_fd"));
  bpf_link_info li{};
  uint32_t len = sizeof(li);
  int ret = bpf_obj_get_info_by_fd(fd, &li, &len);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_get_info_by_fd", "reading link info failed");
  std::string attach_type;
  double target = 0;
  switch (li.type) {
    case BPF_LINK_TYPE_CGROUP:
      attach_type = AttachTypeName(li.cgroup.attach_type);
      target = static_cast<double>(li.cgroup.cgroup_id);
      break;
    case BPF_LINK_TYPE_NETNS:
      attach_type = AttachTypeName(li.netns.attach_type);
      target = li.netns.netns_ino;
      break;
    case BPF_LINK_TYPE_TRACING:
      attach_type = AttachTypeName(li.tracing.attach_type);
      break;
    default:
      break;  // the 6.1 UAPI has no generic attach type field
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", li.id);
  out.Set("progId", li.prog_id);
  out.Set("type", LinkTypeName(li.type));
  out.Set("attachType", attach_type);
  out.Set("targetId", target);
  return out;
}

Napi::Value BpfLink::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "pin", "path");
  // bpf_obj_pin rather than bpf_link__pin: the latter refuses (EBUSY) links
  // from bpf_link__open, which libbpf records as already pinned.
  int ret = bpf_obj_pin(bpf_link__fd(Checked(env, "bpf_obj_pin")), path.c_str());
  if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_pin", "pinning link at " + path + " failed (is the directory on bpffs?)", path);
  return env.Undefined();
}

Napi::Value BpfLink::UpdateProgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BpfProgram* prog = BpfProgram::From(env, info[0], "updateProgram");
  bpf_link* link = Checked(env, "bpf_link__update_program");
  int ret = bpf_link__update_program(link, prog->Loaded(env, "bpf_link__update_program"));
  if (ret < 0)
    ThrowErrno(env, -ret, "bpf_link__update_program",
               "replacing the program of link fd " + std::to_string(bpf_link__fd(link)) + " with '" + prog->name() +
                   "' failed" + (ret == -EINVAL ? " (the program must have the link's type and attach type)" : ""));
  return env.Undefined();
}

Napi::Value BpfLink::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ret = bpf_link__detach(Checked(env, "bpf_link__detach"));
  if (ret < 0) ThrowErrno(env, -ret, "bpf_link__detach", "detaching link failed", {}, Context::kFeature);
  return env.Undefined();
}

Napi::Value BpfLink::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace bpfmesh
