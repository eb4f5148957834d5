// bpfmesh-cni-forward SOCKET NODE MAIN: the CNI plugin's fast path. When the
// node agent listens on SOCKET (`bpfmesh node --cni-socket`), the call (the
// CNI_* variables and the configuration on stdin) is handed to it and its
// answer printed, so an ADD starts no Node.js process. When the agent is not
// there, or fails to answer, the call runs as before: exec NODE MAIN cni,
// with stdin replayed from memory.
//
// Request:  "BPFMESH-CNI 1\n", then each CNI_*=value NUL-terminated, an empty
//           entry, then the configuration bytes; the write side is shut.
// Answer:   "<exit code>\n" then the plugin's stdout, up to EOF.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

extern char** environ;

#define MAX_CONF (1 << 20)
#define MAX_ANSWER (4 << 20)
#define ANSWER_TIMEOUT_S 60

static char* conf;
static size_t conf_len;

static void run_in_process(char** argv) {
  // stdin was read: the agent was there but gave no answer. Say so, and give node a copy of stdin.
  if (conf != NULL) {
    fprintf(stderr, "bpfmesh-cni-forward: the node agent on %s did not answer; running the plugin in a process of its own\n", argv[1]);
    int mem = memfd_create("bpfmesh-cni-stdin", MFD_CLOEXEC);
    if (mem >= 0 && write(mem, conf, conf_len) == (ssize_t)conf_len && lseek(mem, 0, SEEK_SET) == 0) {
      dup2(mem, 0);
    }
  }
  char* args[] = {argv[2], argv[3], (char*)"cni", NULL};
  execv(argv[2], args);
  fprintf(stderr, "bpfmesh-cni-forward: exec %s: %s\n", argv[2], strerror(errno));
  printf("{\"cniVersion\":\"1.0.0\",\"code\":110,\"msg\":\"cannot run %s\",\"details\":\"BPFMESH_E_NOT_BUILT\"}\n", argv[2]);
  exit(1);
}

static int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_stdin(void) {
  size_t cap = 4096;
  conf = malloc(cap);
  if (conf == NULL) return -1;
  for (;;) {
    if (conf_len == cap) {
      if (cap >= MAX_CONF) return -1;
      cap *= 2;
      char* bigger = realloc(conf, cap);
      if (bigger == NULL) return -1;
      conf = bigger;
    }
    ssize_t r = read(0, conf + conf_len, cap - conf_len);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    conf_len += (size_t)r;
  }
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: bpfmesh-cni-forward SOCKET NODE MAIN\n");
    return 2;
  }
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  if (strlen(argv[1]) >= sizeof(sun.sun_path)) run_in_process(argv);
  strcpy(sun.sun_path, argv[1]);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0 || connect(s, (struct sockaddr*)&sun, sizeof(sun)) < 0) run_in_process(argv);  // no agent: today's path
  if (read_stdin() < 0) run_in_process(argv);
  struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  static const char magic[] = "BPFMESH-CNI 1\n";
  int bad = write_all(s, magic, sizeof(magic) - 1);
  for (char** e = environ; !bad && *e != NULL; e++)
    if (strncmp(*e, "CNI_", 4) == 0) bad = write_all(s, *e, strlen(*e) + 1);
  if (!bad) bad = write_all(s, "", 1);
  if (!bad) bad = write_all(s, conf, conf_len);
  if (bad || shutdown(s, SHUT_WR) < 0) run_in_process(argv);

  char* answer = malloc(MAX_ANSWER);
  size_t n = 0;
  if (answer == NULL) run_in_process(argv);
  for (;;) {
    ssize_t r = read(s, answer + n, MAX_ANSWER - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) run_in_process(argv);  // the agent died or stalled: every CNI command may be repeated
    if (r == 0) break;
    n += (size_t)r;
    if (n == MAX_ANSWER) run_in_process(argv);
  }
  char* nl = memchr(answer, '\n', n);
  if (nl == NULL || nl == answer) run_in_process(argv);
  int code = 0;
  for (char* p = answer; p < nl; p++) {
    if (*p < '0' || *p > '9' || code > 255) run_in_process(argv);
    code = code * 10 + (*p - '0');
  }
  size_t out = n - (size_t)(nl + 1 - answer);
  if (write_all(1, nl + 1, out) < 0) return 1;
  return code;
}
