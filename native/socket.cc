// Socket options the proxy needs: original destination and cookies.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "addon.h"
#include "errors.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST is the same
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

namespace bpfmesh {

Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "originalDst", "fd");
  uint32_t family = ArgU32(info, 1, "originalDst", "family", 0);
  if (family != 4 && family != 6) ThrowType(env, "originalDst", "family must be 4 or 6");

  sockaddr_storage ss{};
  socklen_t len = family == 4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  int level = family == 4 ? SOL_IP : SOL_IPV6;
  if (getsockopt(fd, level, SO_ORIGINAL_DST, &ss, &len) < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOPROTOOPT) return env.Null();  // not redirected / no conntrack
    ThrowErrno(env, err, "getsockopt(SO_ORIGINAL_DST)", "reading the original destination of fd " + std::to_string(fd) + " failed");
  }
  char addr[INET6_ADDRSTRLEN] = {0};
  uint16_t port;
  if (family == 4) {
    auto* sin = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr));
    port = ntohs(sin->sin_port);
  } else {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof(addr));
    port = ntohs(sin6->sin6_port);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("address", addr);
  out.Set("port", port);
  return out;
}

Napi::Value NetnsCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "netnsCookie", "netnsFd");

  // setns() moves only the calling thread, i.e. the JS thread: always move back.
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) ThrowErrno(env, errno, "open", "netnsCookie: opening /proc/thread-self/ns/net failed");
  if (setns(netns_fd, CLONE_NEWNET) < 0) {
    int err = errno;
    close(home);
    if (err == EINVAL)
      Throw(env, kBadArgument, err, "setns", "netnsCookie: fd " + std::to_string(netns_fd) + " is not a network namespace");
    ThrowErrno(env, err, "setns", "netnsCookie: entering the network namespace of fd " + std::to_string(netns_fd) + " failed");
  }
  uint64_t cookie = 0;
  int err = 0;
  const char* failed = nullptr;
  int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    err = errno, failed = "socket";
  } else {
    socklen_t len = sizeof(cookie);
    if (getsockopt(sock, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) < 0) err = errno, failed = "getsockopt(SO_NETNS_COOKIE)";
    close(sock);
  }
  if (setns(home, CLONE_NEWNET) < 0) {
    // Continuing would run the whole process's JS in the wrong namespace.
    fprintf(stderr, "bpfmesh: cannot return to the original network namespace (%s); aborting\n", strerror(errno));
    abort();
  }
  close(home);
  if (failed != nullptr)
    ThrowErrno(env, err, failed, "netnsCookie: reading the namespace cookie failed", {},
               err == ENOPROTOOPT ? Context::kFeature : Context::kGeneric);
  return Napi::BigInt::New(env, cookie);
}

// The addresses of every interface in the network namespace behind netnsFd
// (getifaddrs, whose netlink socket opens in the namespace the thread is in):
// a pod's own addresses, which its outbound connects reach over lo.
Napi::Value NetnsAddresses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int netns_fd = ArgFd(info, 0, "netnsAddresses", "netnsFd");
  int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (home < 0) ThrowErrno(env, errno, "open", "netnsAddresses: opening /proc/thread-self/ns/net failed");
  if (setns(netns_fd, CLONE_NEWNET) < 0) {
    int err = errno;
    close(home);
    if (err == EINVAL)
      Throw(env, kBadArgument, err, "setns", "netnsAddresses: fd " + std::to_string(netns_fd) + " is not a network namespace");
    ThrowErrno(env, err, "setns", "netnsAddresses: entering the network namespace of fd " + std::to_string(netns_fd) + " failed");
  }
  ifaddrs* list = nullptr;
  int err = getifaddrs(&list) < 0 ? errno : 0;
  if (setns(home, CLONE_NEWNET) < 0) {
    fprintf(stderr, "bpfmesh: cannot return to the original network namespace (%s); aborting\n", strerror(errno));
    abort();
  }
  close(home);
  if (err != 0) ThrowErrno(env, err, "getifaddrs", "netnsAddresses: listing the addresses of the network namespace failed");
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr) continue;
    char text[INET6_ADDRSTRLEN] = {0};
    if (a->ifa_addr->sa_family == AF_INET)
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(a->ifa_addr)->sin_addr, text, sizeof(text));
    else if (a->ifa_addr->sa_family == AF_INET6)
      inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(a->ifa_addr)->sin6_addr, text, sizeof(text));
    else
      continue;
    out.Set(n++, Napi::String::New(env, text));
  }
  freeifaddrs(list);
  return out;
}

Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "socketCookie", "fd");
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len) < 0)
    ThrowErrno(env, errno, "getsockopt(SO_COOKIE)", "reading the cookie of socket fd " + std::to_string(fd) + " failed");
  return Napi::BigInt::New(env, cookie);
}

// A duplicate of another process's file descriptor (pidfd_getfd, Linux 5.6):
// how the node agent registers a proxy listener that was already listening
// before the pod was enrolled. Needs ptrace access to the process.
Napi::Value TakeSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pid = ArgU32(info, 0, "takeSocket", "pid", 0);
  uint32_t target = ArgU32(info, 1, "takeSocket", "fd", 0);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0)
    ThrowErrno(env, errno, "pidfd_open", "takeSocket: opening process " + std::to_string(pid) + " failed");
  int fd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, target, 0));
  int err = errno;
  close(pidfd);
  if (fd < 0)
    ThrowErrno(env, err, "pidfd_getfd",
               "takeSocket: duplicating fd " + std::to_string(target) + " of process " + std::to_string(pid) +
                   " failed (needs CAP_SYS_PTRACE)");
  return Napi::Number::New(env, fd);
}

// A connected pair of loopback TCP sockets in the caller's netns, blocking,
// [connecting end, accepted end]: the socket-path probe's scratch pair.
Napi::Value TcpLoopbackPair(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fds[3] = {-1, -1, -1};
  const char* failed = nullptr;
  int err = 0;
  sockaddr_in sin{};
  socklen_t len = sizeof(sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if ((fds[2] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) failed = "socket";
  else if (bind(fds[2], reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) < 0) failed = "bind";
  else if (listen(fds[2], 1) < 0) failed = "listen";
  else if (getsockname(fds[2], reinterpret_cast<sockaddr*>(&sin), &len) < 0) failed = "getsockname";
  else if ((fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) failed = "socket";
  else if (connect(fds[0], reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) < 0) failed = "connect";
  else if ((fds[1] = accept4(fds[2], nullptr, nullptr, SOCK_CLOEXEC)) < 0) failed = "accept4";
  if (failed != nullptr) err = errno;
  close(fds[2]);
  if (failed != nullptr) {
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    ThrowErrno(env, err, failed, "tcpLoopbackPair: making a loopback TCP connection failed");
  }
  Napi::Array out = Napi::Array::New(env, 2);
  out.Set(0u, fds[0]);
  out.Set(1u, fds[1]);
  return out;
}

// The kernel's memory accounting of a socket (SO_MEMINFO, what `ss -m` shows).
Napi::Value SocketMeminfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "socketMeminfo", "fd");
  uint32_t mem[9] = {0};  // SK_MEMINFO_VARS
  socklen_t len = sizeof(mem);
  if (getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
    ThrowErrno(env, errno, "getsockopt(SO_MEMINFO)", "reading the memory accounting of socket fd " + std::to_string(fd) + " failed");
  static const char* const names[9] = {"rmemAlloc", "rcvbuf", "wmemAlloc", "sndbuf", "fwdAlloc", "wmemQueued", "optmem", "backlog", "drops"};
  Napi::Object out = Napi::Object::New(env);
  for (unsigned i = 0; i < 9; i++) out.Set(names[i], i * sizeof(uint32_t) < len ? mem[i] : 0);
  return out;
}

}  // namespace bpfmesh
