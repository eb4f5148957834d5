// Shared declarations: per-environment state and one ObjectWrap class per
// libbpf handle. The JS shapes are specified in src/bpf/native.ts.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <unordered_set>

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;

namespace bpfmesh {

// Something that owns a kernel handle. Release() is idempotent: it is reached
// from close(), from the finalizer and from the environment cleanup hook,
// whichever comes first.
class Resource {
 public:
  virtual ~Resource() = default;
  virtual void Release() = 0;
};

// Per-environment state (each worker thread has its own). Lives until after
// every ObjectWrap finalizer has run (napi instance data is freed last).
struct Addon {
  explicit Addon(napi_env env);
  ~Addon();

  static Addon* Get(Napi::Env env) { return env.GetInstanceData<Addon>(); }
  void Track(Resource* r) { live.insert(r); }
  void Untrack(Resource* r) { live.erase(r); }

  napi_env env;
  bool hook_ran = false;
  Napi::FunctionReference object_ctor, program_ctor, map_ctor, link_ctor;
  Napi::FunctionReference ring_ctor;  // ringbuf.cc
  std::unordered_set<Resource*> live;
};

// Passed as the first constructor argument so JS cannot `new` the classes.
Napi::Value ConstructToken(Napi::Env env);
void CheckConstructToken(const Napi::CallbackInfo& info, const char* cls);

// Argument helpers: TypeError (BPFMESH_E_BAD_ARGUMENT) on the wrong type.
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);
int ArgFd(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name,
                uint32_t dflt);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* fn,
                                const char* name);

// libbpf's name for an enum value, or "unknown(N)" for values newer than 1.1.
std::string ProgTypeName(uint32_t t);
std::string AttachTypeName(uint32_t t);
std::string MapTypeName(uint32_t t);
std::string LinkTypeName(uint32_t t);

// What a bpffs pin (or bpf fd) is, from /proc/self/fdinfo. kind is "prog",
// "map", "link" or "" when unknown; prog_id is set for progs and links.
struct FdInfo {
  std::string kind;
  uint32_t id = 0;
  uint32_t prog_id = 0;
};
FdInfo ReadFdInfo(int fd);

// bpf_obj_get(path) with errors that tell "not a pin" from "not permitted".
int ObjGet(Napi::Env env, const std::string& path, const char* fn);

class BpfObject : public Napi::ObjectWrap<BpfObject>, public Resource {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Value Open(const Napi::CallbackInfo& info);  // binding.openObject
  explicit BpfObject(const Napi::CallbackInfo& info);
  ~BpfObject() override;
  void Release() override;

  // nullptr once closed; programs and maps check it before every use.
  bpf_object* handle() const { return obj_; }
  const std::string& path() const { return path_; }

 private:
  bpf_object* Checked(Napi::Env env, const char* fn) const;
  bpf_map* Rodata(Napi::Env env, const char* fn) const;
  Napi::Value RodataSize(const Napi::CallbackInfo& info);
  Napi::Value SetRodata(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Program(const Napi::CallbackInfo& info);
  Napi::Value Map(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  bpf_object* obj_ = nullptr;
  std::string path_;
  bool load_attempted_ = false;  // libbpf allows one load() attempt only
};

class BpfProgram : public Napi::ObjectWrap<BpfProgram> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, Napi::Object owner, bpf_program* prog);
  // Unwraps a JS value that must be a NativeProgram.
  static BpfProgram* From(Napi::Env env, Napi::Value v, const char* fn);
  explicit BpfProgram(const Napi::CallbackInfo& info);

  // The libbpf program; throws if its object was closed or it is not loaded.
  bpf_program* Loaded(Napi::Env env, const char* fn) const;
  const std::string& name() const { return name_; }

 private:
  Napi::Value Name(const Napi::CallbackInfo& info);
  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Id(const Napi::CallbackInfo& info);
  Napi::Value AttachCgroup(const Napi::CallbackInfo& info);
  Napi::Value AttachNetns(const Napi::CallbackInfo& info);
  Napi::Value AttachToMap(const Napi::CallbackInfo& info);
  Napi::Value DetachFromMap(const Napi::CallbackInfo& info);
  Napi::Value MapAttach(const Napi::CallbackInfo& info, bool attach);
  Napi::Value RunMapIter(const Napi::CallbackInfo& info);

  Napi::ObjectReference owner_;  // keeps the BpfObject (and so prog_) alive
  BpfObject* object_ = nullptr;
  bpf_program* prog_ = nullptr;
  std::string name_;
  uint32_t id_ = 0;
};

class BpfMap : public Napi::ObjectWrap<BpfMap>, public Resource {
 public:
  static Napi::Function Define(Napi::Env env);
  // A map borrowed from an object: libbpf owns the fd.
  static Napi::Object New(Napi::Env env, Napi::Object owner, bpf_map* map);
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info);  // binding.openPinnedMap
  explicit BpfMap(const Napi::CallbackInfo& info);
  ~BpfMap() override;
  void Release() override;

 private:
  struct Shape {
    uint32_t type, key_size, value_size;
  };
  int Fd(Napi::Env env, const char* fn) const;  // throws if closed/not loaded
  Shape GetShape() const;
  size_t ValueBufSize(const Shape& s) const;
  void CheckKey(Napi::Env env, const Shape& s, const Napi::Buffer<uint8_t>& b, const char* fn) const;

  Napi::Value Name(const Napi::CallbackInfo& info);
  Napi::Value FdGetter(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value UpdateSocket(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value NextKey(const Napi::CallbackInfo& info);
  Napi::Value LookupBatch(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  // Borrowed mode.
  Napi::ObjectReference owner_;
  BpfObject* object_ = nullptr;
  bpf_map* map_ = nullptr;
  // Owned mode (opened from a pin): shape cached at open.
  int fd_ = -1;
  Shape shape_{};
  std::string name_;
  bool owned_ = false;
};

class BpfLink : public Napi::ObjectWrap<BpfLink>, public Resource {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, bpf_link* link);  // takes ownership
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info);  // binding.openPinnedLink
  explicit BpfLink(const Napi::CallbackInfo& info);
  ~BpfLink() override;
  void Release() override;

 private:
  bpf_link* Checked(Napi::Env env, const char* fn) const;
  Napi::Value FdGetter(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value UpdateProgram(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);

  Addon* addon_;
  bpf_link* link_ = nullptr;
};

// Free functions exported on the binding (socket.cc, pin.cc).
Napi::Value OriginalDst(const Napi::CallbackInfo& info);
Napi::Value NetnsCookie(const Napi::CallbackInfo& info);
Napi::Value NetnsAddresses(const Napi::CallbackInfo& info);
Napi::Value SocketCookie(const Napi::CallbackInfo& info);
Napi::Value TcpLoopbackPair(const Napi::CallbackInfo& info);
Napi::Value SocketMeminfo(const Napi::CallbackInfo& info);
Napi::Value TakeSocket(const Napi::CallbackInfo& info);
Napi::Value SocketInNetns(const Napi::CallbackInfo& info);  // netns-socket.cc
Napi::Value ListenInNetns(const Napi::CallbackInfo& info);
Napi::Value SysctlInNetns(const Napi::CallbackInfo& info);
Napi::Value FlockExclusive(const Napi::CallbackInfo& info);  // lock.cc
Napi::Value FlockRelease(const Napi::CallbackInfo& info);
Napi::Value PinnedKind(const Napi::CallbackInfo& info);
Napi::Value PinnedProgramId(const Napi::CallbackInfo& info);
Napi::Value Unpin(const Napi::CallbackInfo& info);

// Kernel feature probes for `bpfmesh check` (probe.cc).
void RegisterProbes(Napi::Env env, Napi::Object exports);

// The ring buffer reader for `bpfmesh observe` (ringbuf.cc).
void RegisterRingReader(Napi::Env env, Napi::Object exports);

}  // namespace bpfmesh
