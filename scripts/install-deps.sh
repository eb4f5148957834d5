#!/usr/bin/env bash
# The system packages bpfmesh needs to build, test and benchmark, on Debian
# 12 or newer (and Ubuntu 22.04+). One script for CI, the Dockerfile and the
# Vagrant VM (vagrant/provision.sh), so all three prove the same steps. Needs root.
set -euo pipefail

BUILD=(clang llvm libbpf-dev pkg-config make g++ python3)
RUNTIME=(bpftool iproute2 util-linux mount)
TEST=(curl netcat-openbsd iptables wrk nghttp2-client openssl)
# npm run test:kernels: other kernels under qemu (vagrant/kernels/run.sh)
VM=(qemu-system-x86 busybox-static cpio kmod xz-utils zstd)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (it uses apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${BUILD[@]}" "${RUNTIME[@]}" "${TEST[@]}" "${VM[@]}" >/dev/null
echo "install-deps: $(clang --version | head -1); libbpf $(pkg-config --modversion libbpf); $(bpftool version | head -1)"
