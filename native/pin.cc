// bpffs pins: what they are, and removing them.
#include <bpf/bpf.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

FdInfo ReadFdInfo(int fd) {
  FdInfo out;
  std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
  std::string line;
  uint32_t link_id = 0, map_id = 0, prog_id = 0;
  while (std::getline(in, line)) {
    auto value = [&line](const char* key, uint32_t* v) {
      size_t n = std::char_traits<char>::length(key);
      if (line.compare(0, n, key) == 0) *v = static_cast<uint32_t>(strtoul(line.c_str() + n, nullptr, 10));
    };
    value("link_id:", &link_id);
    value("map_id:", &map_id);
    value("prog_id:", &prog_id);
  }
  // A link's fdinfo also has prog_id (its program), so look at link_id first.
  if (link_id != 0) {
    out.kind = "link", out.id = link_id, out.prog_id = prog_id;
  } else if (map_id != 0) {
    out.kind = "map", out.id = map_id;
  } else if (prog_id != 0) {
    out.kind = "prog", out.id = prog_id, out.prog_id = prog_id;
  }
  return out;
}

int ObjGet(Napi::Env env, const std::string& path, const char* fn) {
  int fd = bpf_obj_get(path.c_str());
  if (fd >= 0) return fd;
  int err = -fd;
  if (err == EACCES || err == EINVAL) {
    // The kernel says EACCES for anything on bpffs that is not a pin, too.
    struct stat st{};
    struct statfs sfs{};
    bool is_pin = stat(path.c_str(), &st) == 0 && !S_ISDIR(st.st_mode) && statfs(path.c_str(), &sfs) == 0 &&
                  sfs.f_type == BPF_FS_MAGIC;
    if (!is_pin)
      Throw(env, kBadArgument, err, "bpf_obj_get",
            std::string(fn) + ": " + path + " is not a BPF pin (it must be a file on a bpffs mount)", path);
  }
  ThrowErrno(env, err, "bpf_obj_get", std::string(fn) + ": opening the pin " + path + " failed", path);
}

Napi::Value PinnedKind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "pinnedKind", "path");
  int fd = ObjGet(env, path, "pinnedKind");
  FdInfo fi = ReadFdInfo(fd);
  close(fd);
  if (fi.kind.empty())
    Throw(env, kSyscall, EINVAL, "/proc/self/fdinfo", "pinnedKind: cannot tell what the pin " + path + " is", path);
  return Napi::String::New(env, fi.kind);
}

Napi::Value PinnedProgramId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "pinnedProgramId", "path");
  int fd = ObjGet(env, path, "pinnedProgramId");
  FdInfo fi = ReadFdInfo(fd);
  close(fd);
  // A pinned link also names its program; accept both.
  if (fi.prog_id == 0)
    Throw(env, kBadArgument, EINVAL, "bpf_obj_get",
          "pinnedProgramId: " + path + " is a pinned " + (fi.kind.empty() ? "object" : fi.kind) + ", not a program or link",
          path);
  return Napi::Number::New(env, fi.prog_id);
}

Napi::Value Unpin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "unpin", "path");
  // We run as root: never unlink anything that is not on bpffs.
  struct statfs sfs{};
  if (statfs(path.c_str(), &sfs) < 0) ThrowErrno(env, errno, "statfs", "unpin: " + path + " cannot be inspected", path);
  if (sfs.f_type != BPF_FS_MAGIC)
    Throw(env, kBadArgument, EINVAL, "unlink", "unpin: " + path + " is not on a bpffs mount; refusing to remove it", path);
  if (unlink(path.c_str()) < 0) ThrowErrno(env, errno, "unlink", "unpin: removing " + path + " failed", path);
  return env.Undefined();
}

}  // namespace bpfmesh
