// NativeObject: one struct bpf_object*, from open to close.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cerrno>
#include <cstring>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

Napi::Function BpfObject::Define(Napi::Env env) {
  return DefineClass(env, "NativeObject",
                     {
                         InstanceMethod("rodataSize", &BpfObject::RodataSize),
                         InstanceMethod("setRodata", &BpfObject::SetRodata),
                         InstanceMethod("load", &BpfObject::Load),
                         InstanceMethod("programs", &BpfObject::Programs),
                         InstanceMethod("maps", &BpfObject::Maps),
                         InstanceMethod("program", &BpfObject::Program),
                         InstanceMethod("map", &BpfObject::Map),
                         InstanceMethod("close", &BpfObject::Close),
                     });
}

BpfObject::BpfObject(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<BpfObject>(info), addon_(Addon::Get(info.Env())) {
  CheckConstructToken(info, "NativeObject");
}

BpfObject::~BpfObject() { Release(); }

void BpfObject::Release() {
  if (obj_ == nullptr) return;
  // Unloads programs and closes map fds; links hold their own program refs.
  bpf_object__close(obj_);
  obj_ = nullptr;
  addon_->Untrack(this);
}

Napi::Value BpfObject::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "openObject", "path");
  std::string pin_root;
  if (!info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) ThrowType(env, "openObject", "options must be an object");
    Napi::Value v = info[1].As<Napi::Object>().Get("pinRoot");
    if (!v.IsUndefined()) {
      if (v.IsString()) pin_root = v.As<Napi::String>().Utf8Value();
      if (pin_root.empty()) ThrowType(env, "openObject", "options.pinRoot must be a non-empty string");
    }
  }

  LogCapture capture;
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  // Maps declared with LIBBPF_PIN_BY_NAME are pinned here at load, or reused
  // if a compatible pin already exists.
  if (!pin_root.empty()) opts.pin_root_path = pin_root.c_str();
  bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
  if (obj == nullptr) {
    int err = errno;
    ThrowErrno(env, err, "bpf_object__open_file",
               "cannot open BPF object " + path +
                   (err == ENOENT ? " (was the addon built? run \"npm install\")" : ""),
               path);
  }

  Addon* addon = Addon::Get(env);
  Napi::Object self;
  try {
    self = addon->object_ctor.New({ConstructToken(env)});
  } catch (...) {
    bpf_object__close(obj);
    throw;
  }
  BpfObject* w = Unwrap(self);
  w->obj_ = obj;
  w->path_ = path;
  addon->Track(w);
  return self;
}

bpf_object* BpfObject::Checked(Napi::Env env, const char* fn) const {
  if (obj_ == nullptr) Throw(env, kClosed, EBADF, fn, std::string(fn) + ": the BPF object " + path_ + " is closed", path_);
  return obj_;
}

bpf_map* BpfObject::Rodata(Napi::Env env, const char* fn) const {
  // libbpf 1.x matches names starting with '.' against the ELF section name.
  return bpf_object__find_map_by_name(Checked(env, fn), ".rodata");
}

Napi::Value BpfObject::RodataSize(const Napi::CallbackInfo& info) {
  bpf_map* map = Rodata(info.Env(), "rodataSize");
  size_t size = 0;
  if (map != nullptr && bpf_map__initial_value(map, &size) == nullptr) size = 0;
  return Napi::Number::New(info.Env(), static_cast<double>(size));
}

Napi::Value BpfObject::SetRodata(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> bytes = ArgBuffer(info, 0, "setRodata", "bytes");
  bpf_map* map = Rodata(env, "setRodata");
  if (load_attempted_)
    Throw(env, kState, EBUSY, "bpf_map__set_initial_value", "setRodata: the object " + path_ + " is already loaded; set .rodata before load()", path_);
  size_t size = 0;
  if (map == nullptr || bpf_map__initial_value(map, &size) == nullptr) size = 0;
  if (bytes.Length() != size || size == 0)
    Throw(env, kBadArgument, EINVAL, "bpf_map__set_initial_value",
          "setRodata: got " + std::to_string(bytes.Length()) + " bytes but .rodata of " + path_ + " is " +
              std::to_string(size) + " bytes; rebuild the TS layout to match the BPF object",
          path_);
  LogCapture capture;
  int ret = bpf_map__set_initial_value(map, bytes.Data(), bytes.Length());
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map__set_initial_value", "setting .rodata of " + path_ + " failed", path_);
  return env.Undefined();
}

Napi::Value BpfObject::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Checked(env, "load");
  if (load_attempted_)
    Throw(env, kState, EINVAL, "bpf_object__load", "load: the object " + path_ + " was already loaded (or failed to); close it and open it again", path_);
  load_attempted_ = true;

  LogCapture capture;
  int ret = bpf_object__load(obj);
  if (ret == 0) return env.Undefined();
  int err = -ret;
  const std::string& log = capture.text();
  std::string prog;
  std::string reason = DescribeLoadFailure(log, &prog);
  if (!prog.empty() && err != EPERM) {
    Throw(env, kVerifier, err, "bpf_object__load",
          "the kernel verifier rejected program '" + prog + "' in " + path_ +
              (reason.empty() ? "" : ": " + reason) + " (full log in verifierLog); fix the BPF program",
          path_);
  }
  if (log.find("couldn't reuse pinned map") != std::string::npos) {
    Throw(env, kExists, err, "bpf_object__load",
          "loading " + path_ + " failed: a map pinned under the pin root has a different definition; "
          "unpin the old maps (uninstall) and retry",
          path_);
  }
  ThrowErrno(env, err, "bpf_object__load", "loading BPF object " + path_ + " failed (see verifierLog)", path_);
}

Napi::Value BpfObject::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Checked(env, "programs");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("section", bpf_program__section_name(prog));
    p.Set("type", ProgTypeName(bpf_program__type(prog)));
    // 0 is BPF_CGROUP_INET_INGRESS, but for other program types it only
    // means the section named no attach type (e.g. SEC("sk_skb")).
    enum bpf_attach_type at = bpf_program__expected_attach_type(prog);
    bool none = at == 0 && bpf_program__type(prog) != BPF_PROG_TYPE_CGROUP_SKB;
    p.Set("attachType", none ? std::string() : AttachTypeName(at));
    out.Set(i++, p);
  }
  return out;
}

Napi::Value BpfObject::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bpf_object* obj = Checked(env, "maps");
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    Napi::Object m = Napi::Object::New(env);
    uint32_t id = 0;
    int fd = bpf_map__fd(map);
    if (fd >= 0) {
      bpf_map_info mi{};
      uint32_t len = sizeof(mi);
      if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0) id = mi.id;
    }
    m.Set("name", bpf_map__name(map));
    m.Set("type", MapTypeName(bpf_map__type(map)));
    m.Set("keySize", bpf_map__key_size(map));
    m.Set("valueSize", bpf_map__value_size(map));
    m.Set("maxEntries", bpf_map__max_entries(map));
    m.Set("flags", bpf_map__map_flags(map));
    // Where LIBBPF_PIN_BY_NAME pins it (under the object's pin root); null for maps that are not pinned.
    const char* pin = bpf_map__pin_path(map);
    if (pin != nullptr) m.Set("pinPath", pin);
    else m.Set("pinPath", env.Null());
    m.Set("id", id);
    out.Set(i++, m);
  }
  return out;
}

Napi::Value BpfObject::Program(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "program", "name");
  bpf_program* prog = bpf_object__find_program_by_name(Checked(env, "program"), name.c_str());
  if (prog == nullptr)
    Throw(env, kNotFound, ENOENT, "bpf_object__find_program_by_name",
          "no program named '" + name + "' in " + path_ + "; is the BPF object up to date?", path_);
  return BpfProgram::New(env, Value(), prog);
}

Napi::Value BpfObject::Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "map", "name");
  bpf_map* map = bpf_object__find_map_by_name(Checked(env, "map"), name.c_str());
  if (map == nullptr)
    Throw(env, kNotFound, ENOENT, "bpf_object__find_map_by_name",
          "no map named '" + name + "' in " + path_ + "; is the BPF object up to date?", path_);
  return BpfMap::New(env, Value(), map);
}

Napi::Value BpfObject::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

}  // namespace bpfmesh
