// NativeRingReader: a consumer of one or more pinned BPF ring buffers
// (bpfmesh observe). libbpf's ring_buffer gathers the rings behind one epoll
// fd; a uv_poll on that fd runs the consume on Node's own loop when the
// kernel signals data, so nothing blocks and an idle reader costs nothing.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

namespace {

// One consume hands JS at most this many events; the rest stay in the ring
// (the epoll fd stays readable, so the next loop turn takes them).
constexpr size_t kMaxBatch = 4096;
constexpr int kStop = -ECANCELED;

}  // namespace

class RingReader : public Napi::ObjectWrap<RingReader>, public Resource {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeRingReader",
                       {
                           InstanceMethod("consume", &RingReader::Consume),
                           InstanceMethod("start", &RingReader::Start),
                           InstanceMethod("stop", &RingReader::Stop),
                           InstanceMethod("close", &RingReader::Close),
                       });
  }

  explicit RingReader(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<RingReader>(info), addon_(Addon::Get(info.Env())) {
    CheckConstructToken(info, "NativeRingReader");
  }

  ~RingReader() override { Release(); }

  void Release() override {
    StopPoll();
    if (rb_ != nullptr) {
      ring_buffer__free(rb_);
      rb_ = nullptr;
    }
    for (int fd : fds_) close(fd);
    if (!fds_.empty()) addon_->Untrack(this);
    fds_.clear();
    cb_.Reset();
  }

  static Napi::Value Open(const Napi::CallbackInfo& info);

 private:
  static int OnSample(void* ctx, void* data, size_t len) {
    auto* self = static_cast<RingReader*>(ctx);
    self->batch_.emplace_back(static_cast<const char*>(data), len);
    return self->batch_.size() >= kMaxBatch ? kStop : 0;
  }

  // Drains up to kMaxBatch events into a JS array of Buffers.
  Napi::Array Drain(Napi::Env env) {
    batch_.clear();
    int ret = ring_buffer__consume(rb_);
    if (ret < 0 && ret != kStop) {
      batch_.clear();
      ThrowErrno(env, -ret, "ring_buffer__consume", "reading the ring buffer failed");
    }
    Napi::Array out = Napi::Array::New(env, batch_.size());
    for (size_t i = 0; i < batch_.size(); i++)
      out.Set(static_cast<uint32_t>(i), Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(batch_[i].data()), batch_[i].size()));
    batch_.clear();
    return out;
  }

  ring_buffer* Checked(Napi::Env env, const char* fn) {
    if (rb_ == nullptr) Throw(env, kClosed, EBADF, fn, std::string(fn) + ": the ring reader is closed");
    return rb_;
  }

  Napi::Value Consume(const Napi::CallbackInfo& info) {
    Checked(info.Env(), "consume");
    return Drain(info.Env());
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ring_buffer* rb = Checked(env, "start");
    if (!info[0].IsFunction()) ThrowType(env, "start", "onEvents must be a function");
    if (poll_ != nullptr) Throw(env, kState, EBUSY, "start", "start: the ring reader is already started");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr)
      Throw(env, kState, EINVAL, "napi_get_uv_event_loop", "start: no event loop");
    auto* poll = new uv_poll_t;
    int err = uv_poll_init(loop, poll, ring_buffer__epoll_fd(rb));
    if (err != 0) {
      delete poll;
      ThrowErrno(env, -err, "uv_poll_init", "watching the ring buffer's epoll fd failed");
    }
    poll->data = this;
    err = uv_poll_start(poll, UV_READABLE, OnReadable);
    if (err != 0) {
      uv_close(reinterpret_cast<uv_handle_t*>(poll), OnClosed);
      ThrowErrno(env, -err, "uv_poll_start", "watching the ring buffer's epoll fd failed");
    }
    poll_ = poll;
    cb_ = Napi::Persistent(info[0].As<Napi::Function>());
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    StopPoll();
    cb_.Reset();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Release();
    return info.Env().Undefined();
  }

  void StopPoll() {
    if (poll_ == nullptr) return;
    uv_poll_stop(poll_);
    poll_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), OnClosed);
    poll_ = nullptr;
  }

  static void OnClosed(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }

  static void OnReadable(uv_poll_t* h, int status, int /*events*/) {
    auto* self = static_cast<RingReader*>(h->data);
    if (self == nullptr || self->rb_ == nullptr || self->cb_.IsEmpty()) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    try {
      if (status < 0) ThrowErrno(env, -status, "uv_poll", "waiting on the ring buffer failed");
      Napi::Array events = self->Drain(env);
      if (events.Length() == 0) return;
      // MakeCallback: microtasks and async hooks run as for any I/O callback.
      self->cb_.MakeCallback(env.Global(), {events});
    } catch (const Napi::Error& e) {
      // No JS frame to throw into: report it as an uncaught exception.
      napi_fatal_exception(env, e.Value());
    }
  }

  Addon* addon_;
  ring_buffer* rb_ = nullptr;
  std::vector<int> fds_;
  uv_poll_t* poll_ = nullptr;
  Napi::FunctionReference cb_;
  std::vector<std::string> batch_;
};

Napi::Value RingReader::Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0)
    ThrowType(env, "openRingReader", "paths must be a non-empty array of pinned ring buffer paths");
  Napi::Array paths = info[0].As<Napi::Array>();
  std::vector<int> fds;
  auto cleanup = [&fds]() {
    for (int fd : fds) close(fd);
  };
  ring_buffer* rb = nullptr;
  try {
    for (uint32_t i = 0; i < paths.Length(); i++) {
      Napi::Value v = paths.Get(i);
      if (!v.IsString()) ThrowType(env, "openRingReader", "paths must be strings");
      std::string path = v.As<Napi::String>().Utf8Value();
      int fd = ObjGet(env, path, "openRingReader");
      fds.push_back(fd);
      bpf_map_info mi{};
      uint32_t len = sizeof(mi);
      int ret = bpf_obj_get_info_by_fd(fd, &mi, &len);
      if (ret < 0) ThrowErrno(env, -ret, "bpf_obj_get_info_by_fd", "reading the pinned map " + path + " failed", path);
      if (mi.type != BPF_MAP_TYPE_RINGBUF)
        Throw(env, kBadArgument, EINVAL, "openRingReader", path + " is a " + MapTypeName(mi.type) + " map, not a ring buffer", path);
    }
  } catch (...) {
    cleanup();
    throw;
  }
  Napi::Object self;
  try {
    self = Addon::Get(env)->ring_ctor.New({ConstructToken(env)});
  } catch (...) {
    cleanup();
    throw;
  }
  RingReader* w = Unwrap(self);
  for (size_t i = 0; i < fds.size(); i++) {
    int ret = 0;
    if (i == 0) {
      rb = ring_buffer__new(fds[0], OnSample, w, nullptr);
      if (rb == nullptr) ret = -errno;
    } else {
      ret = ring_buffer__add(rb, fds[i], OnSample, w);
    }
    if (ret < 0) {
      if (rb != nullptr) ring_buffer__free(rb);
      cleanup();
      ThrowErrno(env, -ret, i == 0 ? "ring_buffer__new" : "ring_buffer__add", "setting up the ring buffer reader failed");
    }
  }
  w->rb_ = rb;
  w->fds_ = std::move(fds);
  w->addon_->Track(w);
  return self;
}

Napi::Value OpenRingReader(const Napi::CallbackInfo& info) { return RingReader::Open(info); }

void RegisterRingReader(Napi::Env env, Napi::Object exports) {
  Addon::Get(env)->ring_ctor = Napi::Persistent(RingReader::Define(env));
  exports.Set("openRingReader", Napi::Function::New(env, OpenRingReader, "openRingReader"));
}

}  // namespace bpfmesh
