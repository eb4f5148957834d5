#!/usr/bin/env bash
# The system packages bpfmesh needs to build, test and benchmark, on Debian
# 12 or newer (and Ubuntu 22.04+). One script for CI, the Dockerfile and the
# Vagrant VM (vagrant/provision.sh), so all three prove the same steps. Needs root.
#
#   install-deps.sh [all]    everything below (CI, the VM), Node.js 24 (scripts/install-node.sh),
#                            kubectl and helm for the manifest tests (scripts/install-kube-tools.sh)
#   install-deps.sh build    what builds the addon, BPF objects and dist/ (the image's build stage)
#   install-deps.sh image    what the runtime image needs: libbpf1 (the addon links it), bpftool (inspection)
set -euo pipefail

BUILD=(clang llvm libbpf-dev pkg-config make g++ python3)
RUNTIME=(bpftool iproute2 util-linux mount)
# containernetworking-plugins: bridge + host-local (in /usr/lib/cni) chained with
# bpfmesh-cni in test/kernel/cni.test.ts, invoked as a runtime would.
# protobuf-compiler: protoc, the independent encoder of test/unit/proxy-api-wire.test.ts.
# podman + runc: a real container runtime runs that chain in test/kernel/cni-podman.test.ts
# (runc: crun refuses hybrid cgroup hosts).
# haproxy: the reference L7 proxy of npm run bench's proxy section.
TEST=(curl netcat-openbsd iptables wrk nghttp2-client openssl containernetworking-plugins protobuf-compiler podman runc haproxy)
# npm run test:kernels: other kernels under qemu (vagrant/kernels/run.sh)
VM=(qemu-system-x86 busybox-static cpio kmod xz-utils zstd)
MODE=${1:-all}
case "$MODE" in
  all) PKGS=("${BUILD[@]}" "${RUNTIME[@]}" "${TEST[@]}" "${VM[@]}") ;;
  build) PKGS=("${BUILD[@]}" bpftool) ;; # bpftool: vmlinux.h from the kernel's BTF
  image) PKGS=(libbpf1 bpftool) ;;
  *) echo "install-deps: unknown mode '$MODE'; use all, build or image" >&2; exit 2 ;;
esac

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: run as root (it uses apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
if [ "$MODE" = image ]; then
  rm -rf /var/lib/apt/lists/* # keep the image small
  echo "install-deps: image: $(bpftool version | head -1)"
else
  echo "install-deps: $(clang --version | head -1); libbpf $(pkg-config --modversion libbpf); $(bpftool version | head -1)"
fi
# The image's base and the build stage already are Node 24 (node:24-bookworm).
if [ "$MODE" = all ]; then
  bash "$(dirname "${BASH_SOURCE[0]}")/install-node.sh" 24
  bash "$(dirname "${BASH_SOURCE[0]}")/install-kube-tools.sh"
fi
