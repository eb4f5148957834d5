// NativeMap: a map borrowed from an object (libbpf owns the fd) or an fd
// opened from a bpffs pin (we own it).
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

namespace {

constexpr int kENOTSUPP = 524;

bool IsPerCpu(uint32_t type) {
  return type == BPF_MAP_TYPE_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_ARRAY ||
         type == BPF_MAP_TYPE_LRU_PERCPU_HASH || type == BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE;
}

size_t PossibleCpus(Napi::Env env) {
  int n = libbpf_num_possible_cpus();  // cached by libbpf after the first call
  if (n < 0) ThrowErrno(env, -n, "libbpf_num_possible_cpus", "reading /sys/devices/system/cpu/possible failed");
  return static_cast<size_t>(n);
}

}  // namespace

Napi::Function BpfMap::Define(Napi::Env env) {
  return DefineClass(env, "NativeMap",
                     {
                         InstanceAccessor("name", &BpfMap::Name, nullptr, napi_enumerable),
                         InstanceAccessor("fd", &BpfMap::FdGetter, nullptr, napi_enumerable),
                         InstanceMethod("info", &BpfMap::Info),
                         InstanceMethod("lookup", &BpfMap::Lookup),
                         InstanceMethod("update", &BpfMap::Update),
                         InstanceMethod("updateSocket", &BpfMap::UpdateSocket),
                         InstanceMethod("delete", &BpfMap::Delete),
                         InstanceMethod("nextKey", &BpfMap::NextKey),
                         InstanceMethod("lookupBatch", &BpfMap::LookupBatch),
                         InstanceMethod("pin", &BpfMap::Pin),
                         InstanceMethod("close", &BpfMap::Close),
                     });
}

BpfMap::BpfMap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<BpfMap>(info), addon_(Addon::Get(info.Env())) {
  CheckConstructToken(info, "NativeMap");
}

BpfMap::~BpfMap() { Release(); }

void BpfMap::Release() {
  if (fd_ < 0) return;  // borrowed maps own nothing
  close(fd_);
  fd_ = -1;
  addon_->Untrack(this);
}

Napi::Object BpfMap::New(Napi::Env env, Napi::Object owner, bpf_map* map) {
  Napi::Object self = Addon::Get(env)->map_ctor.New({ConstructToken(env)});
  BpfMap* w = Unwrap(self);
  w->owner_ = Napi::Persistent(owner);
  w->object_ = BpfObject::Unwrap(owner);
  w->map_ = map;
  w->name_ = bpf_map__name(map);
  return self;
}

Napi::Value BpfMap::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "openPinnedMap", "path");
  int fd = ObjGet(env, path, "openPinnedMap");
  FdInfo fi = ReadFdInfo(fd);
  bpf_map_info mi{};
  uint32_t len = sizeof(mi);
  int ret = fi.kind == "map" ? bpf_obj_get_info_by_fd(fd, &mi, &len) : 0;
  if (fi.kind != "map" || ret < 0) {
    close(fd);
    if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_get_info_by_fd", "reading the pinned map " + path + " failed", path);
    Throw(env, kBadArgument, EINVAL, "bpf_obj_get", path + " is a pinned " + fi.kind + ", not a map", path);
  }
  Napi::Object self;
  try {
    self = Addon::Get(env)->map_ctor.New({ConstructToken(env)});
  } catch (...) {
    close(fd);
    throw;
  }
  BpfMap* w = Unwrap(self);
  w->owned_ = true;
  w->fd_ = fd;
  w->shape_ = {mi.type, mi.key_size, mi.value_size};
  w->name_ = mi.name;
  w->addon_->Track(w);
  return self;
}

int BpfMap::Fd(Napi::Env env, const char* fn) const {
  if (owned_) {
    if (fd_ < 0) Throw(env, kClosed, EBADF, fn, std::string(fn) + ": map '" + name_ + "' is closed");
    return fd_;
  }
  if (map_ == nullptr || object_->handle() == nullptr)
    Throw(env, kClosed, EBADF, fn, std::string(fn) + ": map '" + name_ + "' (or its BPF object) is closed");
  int fd = bpf_map__fd(map_);
  if (fd < 0) Throw(env, kState, EINVAL, fn, std::string(fn) + ": map '" + name_ + "' is not created yet; call load() on its object first");
  return fd;
}

BpfMap::Shape BpfMap::GetShape() const {
  if (owned_) return shape_;
  return {bpf_map__type(map_), bpf_map__key_size(map_), bpf_map__value_size(map_)};
}

size_t BpfMap::ValueBufSize(const Shape& s) const {
  if (!IsPerCpu(s.type)) return s.value_size;
  // The kernel lays per-CPU values out 8-byte aligned, one per possible CPU.
  return ((s.value_size + 7) / 8 * 8) * PossibleCpus(Env());
}

void BpfMap::CheckKey(Napi::Env env, const Shape& s, const Napi::Buffer<uint8_t>& b, const char* fn) const {
  if (b.Length() != s.key_size)
    Throw(env, kBadArgument, EINVAL, fn,
          std::string(fn) + ": key is " + std::to_string(b.Length()) + " bytes but map '" + name_ + "' has " +
              std::to_string(s.key_size) + "-byte keys");
}

Napi::Value BpfMap::Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }

Napi::Value BpfMap::FdGetter(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (owned_)
    fd = fd_;
  else if (map_ != nullptr && object_->handle() != nullptr)
    fd = bpf_map__fd(map_);
  return Napi::Number::New(info.Env(), fd < 0 ? -1 : fd);
}

Napi::Value BpfMap::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  // Not yet loaded: what libbpf will create.
  if (!owned_ && map_ != nullptr && object_->handle() != nullptr && bpf_map__fd(map_) < 0) {
    out.Set("name", name_);
    out.Set("type", MapTypeName(bpf_map__type(map_)));
    out.Set("keySize", bpf_map__key_size(map_));
    out.Set("valueSize", bpf_map__value_size(map_));
    out.Set("maxEntries", bpf_map__max_entries(map_));
    out.Set("flags", bpf_map__map_flags(map_));
    out.Set("id", 0);
    return out;
  }
  int fd = Fd(env, "bpf_obj_get_info_by_fd");
  bpf_map_info mi{};
  uint32_t len = sizeof(mi);
  int ret = bpf_obj_get_info_by_fd(fd, &mi, &len);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_get_info_by_fd", "reading info of map '" + name_ + "' failed");
  // Borrowed maps keep libbpf's full name; the kernel's is cut at 15 chars.
  out.Set("name", owned_ ? std::string(mi.name) : name_);
  out.Set("type", MapTypeName(mi.type));
  out.Set("keySize", mi.key_size);
  out.Set("valueSize", mi.value_size);
  out.Set("maxEntries", mi.max_entries);
  out.Set("flags", mi.map_flags);
  out.Set("id", mi.id);
  return out;
}

Napi::Value BpfMap::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "lookup", "key");
  int fd = Fd(env, "bpf_map_lookup_elem");
  Shape s = GetShape();
  CheckKey(env, s, key, "bpf_map_lookup_elem");
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, ValueBufSize(s));
  int ret = bpf_map_lookup_elem(fd, key.Data(), value.Data());
  if (ret == -ENOENT) return env.Null();
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_lookup_elem", "lookup in map '" + name_ + "' failed");
  return value;
}

Napi::Value BpfMap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "update", "key");
  Napi::Buffer<uint8_t> value = ArgBuffer(info, 1, "update", "value");
  uint32_t flags = ArgU32(info, 2, "update", "flags", BPF_ANY);
  int fd = Fd(env, "bpf_map_update_elem");
  Shape s = GetShape();
  CheckKey(env, s, key, "bpf_map_update_elem");
  size_t want = ValueBufSize(s);
  if (value.Length() != want)
    Throw(env, kBadArgument, EINVAL, "bpf_map_update_elem",
          "update: value is " + std::to_string(value.Length()) + " bytes but map '" + name_ + "' needs " +
              std::to_string(want) + (IsPerCpu(s.type) ? " (per-CPU: value size rounded up to 8, times possible CPUs)" : ""));
  int ret = bpf_map_update_elem(fd, key.Data(), value.Data(), flags);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_update_elem", "update of map '" + name_ + "' failed");
  return env.Undefined();
}

Napi::Value BpfMap::UpdateSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "updateSocket", "key");
  int sock = ArgFd(info, 1, "updateSocket", "socketFd");
  uint32_t flags = ArgU32(info, 2, "updateSocket", "flags", BPF_ANY);
  int fd = Fd(env, "bpf_map_update_elem");
  Shape s = GetShape();
  CheckKey(env, s, key, "bpf_map_update_elem");
  uint32_t v32 = static_cast<uint32_t>(sock);
  uint64_t v64 = static_cast<uint64_t>(sock);
  const void* value = s.value_size == 4 ? static_cast<const void*>(&v32) : static_cast<const void*>(&v64);
  if (s.value_size != 4 && s.value_size != 8)
    Throw(env, kBadArgument, EINVAL, "bpf_map_update_elem",
          "updateSocket: map '" + name_ + "' has " + std::to_string(s.value_size) + "-byte values; a sockmap/sockhash needs 4 or 8");
  int ret = bpf_map_update_elem(fd, key.Data(), value, flags);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_update_elem", "putting socket fd " + std::to_string(sock) + " into map '" + name_ + "' failed");
  return env.Undefined();
}

Napi::Value BpfMap::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Buffer<uint8_t> key = ArgBuffer(info, 0, "delete", "key");
  int fd = Fd(env, "bpf_map_delete_elem");
  CheckKey(env, GetShape(), key, "bpf_map_delete_elem");
  int ret = bpf_map_delete_elem(fd, key.Data());
  if (ret == -ENOENT) return Napi::Boolean::New(env, false);
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_delete_elem", "delete from map '" + name_ + "' failed");
  return Napi::Boolean::New(env, true);
}

Napi::Value BpfMap::NextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "bpf_map_get_next_key");
  Shape s = GetShape();
  const void* key = nullptr;  // NULL asks for the first key
  if (!info[0].IsNull() && !info[0].IsUndefined()) {
    Napi::Buffer<uint8_t> k = ArgBuffer(info, 0, "nextKey", "key");
    CheckKey(env, s, k, "bpf_map_get_next_key");
    key = k.Data();
  }
  Napi::Buffer<uint8_t> next = Napi::Buffer<uint8_t>::New(env, s.key_size);
  int ret = bpf_map_get_next_key(fd, key, next.Data());
  if (ret == -ENOENT) return env.Null();
  if (ret < 0) ThrowErrno(env, -ret, "bpf_map_get_next_key", "iterating map '" + name_ + "' failed");
  return next;
}

Napi::Value BpfMap::LookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env, "bpf_map_lookup_batch");
  Shape s = GetShape();
  // Hash maps use a u32 bucket cursor, array-like maps a key.
  size_t token = std::max<size_t>(s.key_size, 4);
  std::vector<uint8_t> in_batch(token), out_batch(token);
  bool has_in = !info[0].IsNull() && !info[0].IsUndefined();
  if (has_in) {
    Napi::Buffer<uint8_t> b = ArgBuffer(info, 0, "lookupBatch", "inBatch");
    if (b.Length() != token)
      Throw(env, kBadArgument, EINVAL, "bpf_map_lookup_batch", "lookupBatch: inBatch must be the outBatch of the previous call");
    memcpy(in_batch.data(), b.Data(), token);
  }
  uint32_t count = ArgU32(info, 1, "lookupBatch", "count", 0);
  if (count == 0) ThrowType(env, "lookupBatch", "count must be a positive integer");
  count = std::min<uint32_t>(count, 1u << 16);  // a batch may return fewer anyway

  size_t vsize = ValueBufSize(s);
  std::vector<uint8_t> keys(static_cast<size_t>(count) * s.key_size);
  std::vector<uint8_t> values(static_cast<size_t>(count) * vsize);
  uint32_t n = count;
  int ret = bpf_map_lookup_batch(fd, has_in ? in_batch.data() : nullptr, out_batch.data(), keys.data(),
                                 values.data(), &n, nullptr);
  int err = ErrFromRet(ret);
  if (err == EINVAL || err == EOPNOTSUPP || err == kENOTSUPP) return env.Null();  // no batch ops here
  if (err != 0 && err != ENOENT)
    ThrowErrno(env, err, "bpf_map_lookup_batch",
               "batch lookup in map '" + name_ + "' failed" + (err == ENOSPC ? " (raise count)" : ""));
  if (n > count) n = count;

  Napi::Array jkeys = Napi::Array::New(env, n), jvalues = Napi::Array::New(env, n);
  for (uint32_t i = 0; i < n; i++) {
    jkeys.Set(i, Napi::Buffer<uint8_t>::Copy(env, keys.data() + i * s.key_size, s.key_size));
    jvalues.Set(i, Napi::Buffer<uint8_t>::Copy(env, values.data() + i * vsize, vsize));
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", jkeys);
  out.Set("values", jvalues);
  // ENOENT: this was the last batch.
  out.Set("outBatch", err == ENOENT ? env.Null() : Napi::Buffer<uint8_t>::Copy(env, out_batch.data(), token).As<Napi::Value>());
  return out;
}

Napi::Value BpfMap::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "pin", "path");
  int fd = Fd(env, "bpf_obj_pin");
  int ret = bpf_obj_pin(fd, path.c_str());
  if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_pin", "pinning map '" + name_ + "' at " + path + " failed (is the directory on bpffs?)", path);
  return env.Undefined();
}

Napi::Value BpfMap::Close(const Napi::CallbackInfo& info) {
  if (owned_) {
    Release();
  } else {
    // The fd is the object's; just let go of the object.
    map_ = nullptr;
    object_ = nullptr;
    owner_.Reset();
  }
  return info.Env().Undefined();
}

}  // namespace bpfmesh
