// Sockets made inside another network namespace, for the node proxy: one
// process serves every pod of the node with sockets that live in each pod's
// netns. Only socket() has to run there (a socket keeps the netns it was made
// in; bind, listen and connect act in it whatever the caller's netns), so the
// calling thread enters the pod's netns for that one call and comes back.
// Linux allows setns(CLONE_NEWNET) on one thread of a multithreaded process.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "addon.h"
#include "errors.h"

namespace bpfmesh {

namespace {

// This thread's own netns, opened once per thread (worker threads have their own).
int HomeNetns(Napi::Env env) {
  thread_local int home = -1;
  if (home < 0) {
    home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) ThrowErrno(env, errno, "open", "socketInNetns: opening /proc/thread-self/ns/net failed");
  }
  return home;
}

// socket(family, SOCK_STREAM) inside the netns of netns_fd, non-blocking and
// close-on-exec, with SO_MARK set when mark != 0. Throws on failure.
int TcpSocketIn(Napi::Env env, int netns_fd, int family, uint32_t mark, const char* fn) {
  int home = HomeNetns(env);
  if (setns(netns_fd, CLONE_NEWNET) < 0) {
    int err = errno;
    if (err == EINVAL)
      Throw(env, kBadArgument, err, "setns", std::string(fn) + ": fd " + std::to_string(netns_fd) + " is not a network namespace");
    ThrowErrno(env, err, "setns", std::string(fn) + ": entering the network namespace of fd " + std::to_string(netns_fd) + " failed (needs CAP_SYS_ADMIN)");
  }
  int sock = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err = sock < 0 ? errno : 0;
  if (setns(home, CLONE_NEWNET) < 0) {
    // Continuing would run the whole process's JS in the pod's namespace.
    fprintf(stderr, "bpfmesh: cannot return to the original network namespace (%s); aborting\n", strerror(errno));
    abort();
  }
  if (sock < 0) ThrowErrno(env, err, "socket", std::string(fn) + ": creating a socket in the pod's network namespace failed");
  if (mark != 0 && setsockopt(sock, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) {
    err = errno;
    close(sock);
    ThrowErrno(env, err, "setsockopt(SO_MARK)", std::string(fn) + ": marking the socket failed (needs CAP_NET_ADMIN)");
  }
  return sock;
}

uint32_t ArgFamily(const Napi::CallbackInfo& info, size_t i, const char* fn) {
  uint32_t family = ArgU32(info, i, fn, "family", 0);
  if (family != 4 && family != 6) ThrowType(info.Env(), fn, "family must be 4 or 6");
  return family;
}

}  // namespace

// socketInNetns(netnsFd, family 4|6, mark) -> fd: an unconnected TCP socket
// made in the netns, for `new net.Socket({fd})` and connect() in the same tick.
Napi::Value SocketInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "socketInNetns", "netnsFd");
  uint32_t family = ArgFamily(info, 1, "socketInNetns");
  uint32_t mark = ArgU32(info, 2, "socketInNetns", "mark", 0);
  int sock = TcpSocketIn(env, netns_fd, family == 4 ? AF_INET : AF_INET6, mark, "socketInNetns");
  return Napi::Number::New(env, sock);
}

// listenInNetns(netnsFd, host, port, backlog, mark, reusePort) -> fd: a TCP
// listener bound and listening in the netns, for server.listen({fd}, backlog).
// An IPv6 listener is IPv6-only (its IPv4 twin is a listener of its own).
Napi::Value ListenInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "listenInNetns", "netnsFd");
  if (info.Length() < 2 || !info[1].IsString()) ThrowType(env, "listenInNetns", "host must be an IP address string");
  std::string host = info[1].As<Napi::String>().Utf8Value();
  uint32_t port = ArgU32(info, 2, "listenInNetns", "port", 0);
  uint32_t backlog = ArgU32(info, 3, "listenInNetns", "backlog", 0);
  uint32_t mark = ArgU32(info, 4, "listenInNetns", "mark", 0);
  bool reuse_port = info.Length() > 5 && info[5].ToBoolean().Value();
  if (port > 65535) ThrowType(env, "listenInNetns", "port must be 0..65535");

  sockaddr_storage ss{};
  socklen_t len;
  int family;
  auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &sin->sin_addr) == 1) {
    family = AF_INET, sin->sin_family = AF_INET, sin->sin_port = htons(port), len = sizeof(*sin);
  } else if (inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) == 1) {
    family = AF_INET6, sin6->sin6_family = AF_INET6, sin6->sin6_port = htons(port), len = sizeof(*sin6);
  } else {
    ThrowType(env, "listenInNetns", "host \"" + host + "\" is not an IP address");
  }
  int sock = TcpSocketIn(env, netns_fd, family, mark, "listenInNetns");
  int one = 1;
  const char* failed = nullptr;
  if (setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) failed = "setsockopt(SO_REUSEADDR)";
  else if (reuse_port && setsockopt(sock, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) failed = "setsockopt(SO_REUSEPORT)";
  else if (family == AF_INET6 && setsockopt(sock, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) failed = "setsockopt(IPV6_V6ONLY)";
  else if (bind(sock, reinterpret_cast<sockaddr*>(&ss), len) < 0) failed = "bind";
  else if (listen(sock, static_cast<int>(backlog)) < 0) failed = "listen";
  if (failed != nullptr) {
    int err = errno;
    close(sock);
    ThrowErrno(env, err, failed, "listenInNetns: listening on " + host + ":" + std::to_string(port) + " in the pod's network namespace failed");
  }
  return Napi::Number::New(env, sock);
}

// sysctlInNetns(netnsFd, "net.ipv4.tcp_migrate_req", "1"): writes a
// per-netns sysctl of the pod. A /proc/sys/net file belongs to the netns of
// the thread that opens it, so only open() runs inside.
Napi::Value SysctlInNetns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "sysctlInNetns", "netnsFd");
  if (info.Length() < 3 || !info[1].IsString() || !info[2].IsString()) ThrowType(env, "sysctlInNetns", "name and value must be strings");
  std::string name = info[1].As<Napi::String>().Utf8Value();
  std::string value = info[2].As<Napi::String>().Utf8Value();
  if (name.rfind("net.", 0) != 0 || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.") != std::string::npos || name.find("..") != std::string::npos)
    ThrowType(env, "sysctlInNetns", "name \"" + name + "\" is not a net.* sysctl");
  std::string path = "/proc/sys/" + name;
  for (auto& c : path) if (c == '.') c = '/';
  int home = HomeNetns(env);
  if (setns(netns_fd, CLONE_NEWNET) < 0)
    ThrowErrno(env, errno, "setns", "sysctlInNetns: entering the network namespace of fd " + std::to_string(netns_fd) + " failed (needs CAP_SYS_ADMIN)");
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  int err = fd < 0 ? errno : 0;
  if (setns(home, CLONE_NEWNET) < 0) {
    fprintf(stderr, "bpfmesh: cannot return to the original network namespace (%s); aborting\n", strerror(errno));
    abort();
  }
  if (fd < 0) ThrowErrno(env, err, "open", "sysctlInNetns: opening " + path + " in the pod's network namespace failed", path);
  ssize_t n = write(fd, value.data(), value.size());
  err = n < 0 ? errno : 0;
  close(fd);
  if (n < 0) ThrowErrno(env, err, "write", "sysctlInNetns: writing " + name + " failed", path);
  return env.Undefined();
}

}  // namespace bpfmesh
