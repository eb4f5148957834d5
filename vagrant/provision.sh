#!/usr/bin/env bash
# The one provisioning script for a machine that runs bpfmesh's kernel
# tests: the VM that `vagrant up` boots (vagrant/Vagrantfile) and the qemu
# guests that `npm run test:kernels` boots (vagrant/kernels/run.sh) run the
# same steps from here.
#
#   provision.sh system        packages (scripts/install-deps.sh), Node 24,
#                              npm ci: the build (Vagrant; CI's host does this
#                              itself in .ci/run, and its guests reuse it)
#   provision.sh kernel-env    what the kernel tests expect of a booted kernel:
#                              /proc, /sys, /dev, writable /tmp and /run,
#                              /run/netns, cgroup2 at /sys/fs/cgroup, bpffs at
#                              /sys/fs/bpf, veth + bridge, loopback up, BTF.
#                              Idempotent; a no-op where systemd did it.
#   provision.sh test [FILE..] the kernel tests as root with CI=true (a missing
#                              capability fails instead of skipping); default:
#                              dist/test/kernel/*.test.js
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODPROBE=${BPFMESH_MODPROBE:-modprobe}

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "provision.sh $1: run as root" >&2
    exit 1
  fi
}

mounted() { # mounted TYPE DIR
  awk -v t="$1" -v d="$2" '$2 == d && $3 == t { f = 1 } END { exit !f }' /proc/mounts 2>/dev/null
}

writable() { [ -d "$1" ] && touch "$1/.bpfmesh-probe" 2>/dev/null && rm -f "$1/.bpfmesh-probe"; }

system() {
  need_root system
  # The packages, and Node 24 (scripts/install-node.sh, from the npm registry;
  # Debian 12 ships Node 18). Linked into /usr/local/bin so that sudo's PATH
  # finds it too: this VM is bpfmesh's own.
  bash "$REPO/scripts/install-deps.sh"
  bash "$REPO/scripts/install-node.sh" --link 24
  eval "$(bash "$REPO/scripts/install-node.sh" --env 24)"
  echo "provision: node $(node --version), npm $(npm --version)"
  cd "$REPO"
  npm ci --no-audit --no-fund
  npm run build:ts
}

kernel_env() {
  need_root kernel-env
  [ -e /proc/self ] || mount -t proc proc /proc
  [ -d /sys/kernel ] || mount -t sysfs sysfs /sys
  [ -e /dev/null ] || mount -t devtmpfs devtmpfs /dev
  [ -d /dev/pts ] || { mkdir -p /dev/pts && mount -t devpts devpts /dev/pts; }
  [ -d /dev/shm ] || { mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 tmpfs /dev/shm; }
  writable /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
  writable /run || mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -p /run/netns
  # cgroup v2: the unified hierarchy at /sys/fs/cgroup, unless a cgroup2
  # mount is already there (hybrid hosts have it at /sys/fs/cgroup/unified).
  if ! grep -q '^[^ ]* [^ ]* cgroup2 ' /proc/mounts; then
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
  fi
  mounted bpf /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  # The lab wires pods with veth pairs to a bridge; both are modules on
  # distribution kernels. Built in, modprobe has nothing to do.
  for mod in veth bridge; do
    [ -d "/sys/module/$mod" ] || "$MODPROBE" "$mod"
  done
  ip link set lo up
  if [ ! -r /sys/kernel/btf/vmlinux ]; then
    echo "provision.sh kernel-env: this kernel has no BTF (/sys/kernel/btf/vmlinux); bpfmesh needs CONFIG_DEBUG_INFO_BTF" >&2
    exit 1
  fi
  echo "provision: kernel $(uname -r): cgroup2 $(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts), bpffs /sys/fs/bpf, veth, bridge, BTF"
}

run_tests() {
  need_root test
  cd "$REPO"
  local files=("$@")
  [ ${#files[@]} -gt 0 ] || files=(dist/test/kernel/*.test.js)
  local reporter=()
  [ -z "${BPFMESH_TEST_REPORTER:-}" ] || reporter=(--test-reporter="$BPFMESH_TEST_REPORTER")
  echo "provision: tests on node $(node --version) ($(command -v node))"
  CI=true exec node --test --test-concurrency=1 "${reporter[@]}" "${files[@]}"
}

case "${1:-}" in
  system) system ;;
  kernel-env) kernel_env ;;
  test) shift; run_tests "$@" ;;
  *)
    echo "usage: $0 system | kernel-env | test [FILE...]" >&2
    exit 2
    ;;
esac
