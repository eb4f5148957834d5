#!/usr/bin/env bash
# `npm run test:kernels`: bpfmesh's kernel tests under other kernels than the
# host's, each booted under qemu with the host's own userspace.
#
# For each kernel (a Debian image package name or a glob of names; the
# newest match is taken), this fetches the package with apt, unpacks it
# (dpkg -x, not installed) into a cache, builds a busybox initramfs that
# loads its virtio + 9p modules and mounts the host's / (shared read-only
# over 9p) into the guest (see init), boots it under qemu (TCG: this machine
# has no working nested virtualisation), and runs vagrant/provision.sh
# kernel-env + test in the guest, the same steps as the Vagrant VM. The
# guest's node --test output streams here as it runs (serial port 2; the
# kernel's console is port 1); one summary line per kernel follows, then
# "kernels: N passed, N failed, N skipped", and the exit code is non-zero
# if any kernel failed, did not boot or timed out.
#
#   vagrant/kernels/run.sh [PACKAGE-OR-GLOB...]
#
# Environment:
#   BPFMESH_KERNELS        kernels when no argument is given
#                          (default: linux-image-6.1.0-*-amd64, Debian's 6.1 LTS)
#   BPFMESH_KERNEL_TESTS   test files, relative to the repo (default: below)
#   BPFMESH_VM_TIMEOUT     seconds per kernel before qemu is killed (default 780)
#   BPFMESH_VM_CPUS, BPFMESH_VM_MEM   vCPUs (2) and MiB (8192)
#   BPFMESH_VM_ACCEL       qemu accelerator (tcg; kvm where nesting works)
#   BPFMESH_KERNEL_CACHE   unpacked kernels (default /var/cache/bpfmesh-kernels,
#                          ~/.cache/bpfmesh-kernels when not root)
#   BPFMESH_VM_KEEP=1      keep the work folder (initramfs, console and results logs)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$REPO/vagrant/kernels

# The kernel-level tests: BPF loading and errors, outbound interception,
# inbound steering, a proxy not written in TypeScript (Python) and what the
# app sees, the socket path (its bound, and its trim under induced loss), colliding tuples, init/reset/inspect,
# the node-wide install (CNI and DaemonSet modes), an upgrade in place under traffic.
# proxy-e2e, mesh-e2e and demo are left out under emulation: they test the
# TypeScript proxy and control plane, whose kernel path outbound, inbound
# and sockpath cover (proxy-e2e alone takes about 3.5 minutes under TCG;
# BPFMESH_KERNEL_TESTS runs it: it passed on 6.1, once after one failure of
# its SIGTERM-drain test).
DEFAULT_TESTS="dist/test/kernel/errors.test.js dist/test/kernel/outbound.test.js dist/test/kernel/inbound.test.js dist/test/kernel/foreign-proxy.test.js dist/test/kernel/sockpath.test.js dist/test/kernel/sockpath-bound.test.js dist/test/kernel/collide.test.js dist/test/kernel/lifecycle.test.js dist/test/kernel/node-wide.test.js dist/test/kernel/upgrade.test.js dist/test/kernel/observe.test.js dist/test/kernel/sockpath-trim.test.js"
TESTS=${BPFMESH_KERNEL_TESTS:-$DEFAULT_TESTS}
TIMEOUT=${BPFMESH_VM_TIMEOUT:-780}
CPUS=${BPFMESH_VM_CPUS:-2}
# 8 GiB, most of it never touched. The socket path is bounded now (a few
# MiB per connection instead of ~250 MB in queues, which hit tcp_mem at
# 2-4 GiB); its tests pass on 6.1 with 4096.
MEM=${BPFMESH_VM_MEM:-8192}
ACCEL=${BPFMESH_VM_ACCEL:-tcg}
if [ "$(id -u)" -eq 0 ]; then CACHE=${BPFMESH_KERNEL_CACHE:-/var/cache/bpfmesh-kernels}; else CACHE=${BPFMESH_KERNEL_CACHE:-$HOME/.cache/bpfmesh-kernels}; fi
case $CACHE/ in
  /tmp/* | /run/* | /proc/* | /sys/* | /dev/*) echo "test:kernels: the kernel cache $CACHE must be outside /tmp, /run, /proc, /sys and /dev: the guest has its own there, and loads modules from the cache" >&2 && exit 1 ;;
esac
if [ $# -gt 0 ]; then KERNELS=("$@"); else read -r -a KERNELS <<<"${BPFMESH_KERNELS:-linux-image-6.1.0-*-amd64}"; fi

say() { echo "test:kernels: $*"; }
die() {
  echo "test:kernels: $*" >&2
  exit 1
}

for tool in qemu-system-x86_64 busybox cpio gzip depmod modprobe apt-get apt-cache dpkg; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/install-deps.sh (as root)"
done
BUSYBOX=$(command -v busybox)
ldd "$BUSYBOX" >/dev/null 2>&1 && die "$BUSYBOX is not static: install busybox-static"
# The guest runs this node (the host's, over 9p): the first on PATH, as
# .ci/run sets it (Node 24 from scripts/install-node.sh).
NODE=$(command -v node) || die "node is missing"
say "guests run $NODE ($("$NODE" --version))"
for f in build/Release/bpfmesh.node build/bpf/intercept.bpf.o $TESTS; do
  case $f in /*) p=$f ;; *) p=$REPO/$f ;; esac
  [ -e "$p" ] || die "$f is missing: build first (npm install; npm run build:ts)"
done

WORK=$(mktemp -d /tmp/bpfmesh-kernels.XXXXXX)
QEMU_PID= TAIL_PID=
cleanup() {
  [ -z "$TAIL_PID" ] || kill "$TAIL_PID" 2>/dev/null || true
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill -KILL "$QEMU_PID" 2>/dev/null || true; fi
  if [ -f "$WORK/qemu.pid" ]; then
    local p
    p=$(cat "$WORK/qemu.pid" 2>/dev/null || true)
    [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
  fi
  if [ -n "${BPFMESH_VM_KEEP:-}" ]; then echo "test:kernels: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -eq 0 ]; then
  apt-get update -qq || say "apt-get update failed; using the package lists as they are"
fi

# The newest package whose name matches $1 (a name or a glob).
resolve() {
  local want=$1 re
  if [[ $want != *[*?]* ]]; then
    echo "$want"
    return
  fi
  # A glob's * stands for one dash-free part, so 6.1.0-*-amd64 is not -rt- or -cloud-.
  re="^$(sed -e 's/[.+]/\\&/g' -e 's/\*/[^-]*/g' -e 's/?/./g' <<<"$want")\$"
  apt-cache pkgnames 2>/dev/null | grep -E "$re" | grep -v -- '-dbg$\|-unsigned$' | sort -V | tail -1
}

# Fetch + unpack + depmod one package into the cache; prints its directory.
unpack() {
  local pkg=$1 ver dir tmp
  ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '/^Version:/ { print $2; exit }')
  [ -n "$ver" ] || die "apt knows no package $pkg (apt-get update?)"
  dir=$CACHE/${pkg}_${ver}
  if [ ! -f "$dir/.complete" ]; then
    mkdir -p "$CACHE"
    tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$tmp/apt.log") || {
      cat "$tmp/apt.log" >&2
      rm -rf "$tmp"
      die "apt-get download $pkg=$ver failed"
    }
    dpkg -x "$tmp"/*.deb "$tmp/root"
    # kmod looks in <dir>/lib/modules; newer packages put modules in usr/lib.
    [ -e "$tmp/root/lib" ] || ln -s usr/lib "$tmp/root/lib"
    local kver
    kver=$(ls "$tmp/root/lib/modules")
    depmod -b "$tmp/root" "$kver"
    # Earlier versions of the same package are dead weight.
    rm -rf "$CACHE/${pkg}_"*
    mv "$tmp/root" "$dir"
    rm -rf "$tmp"
    touch "$dir/.complete"
  fi
  echo "$dir"
}

# initramfs: busybox, /init, the settings, and the virtio + 9p modules.
build_initramfs() {
  local root=$1 kver=$2 out=$3 stage=$WORK/initramfs m
  rm -rf "$stage"
  mkdir -p "$stage/bpfmesh-vm/modules"
  cp "$BUSYBOX" "$stage/bpfmesh-vm/busybox"
  cp "$HERE/init" "$stage/init"
  chmod 755 "$stage/init"
  : >"$stage/bpfmesh-vm/modules/order"
  for m in virtio_pci 9pnet_virtio 9p; do
    modprobe -d "$root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
  done | awk '!seen[$0]++' | while read -r ko; do
    local name
    name=$(basename "$ko")
    case $name in
      *.ko) cp "$ko" "$stage/bpfmesh-vm/modules/$name" ;;
      *.ko.xz) name=${name%.xz} && xz -dc "$ko" >"$stage/bpfmesh-vm/modules/$name" ;;
      *.ko.zst) name=${name%.zst} && zstd -qdc "$ko" >"$stage/bpfmesh-vm/modules/$name" ;;
      *.ko.gz) name=${name%.gz} && gzip -dc "$ko" >"$stage/bpfmesh-vm/modules/$name" ;;
      *) die "unexpected module file $ko" ;;
    esac
    echo "$name" >>"$stage/bpfmesh-vm/modules/order"
  done
  [ -s "$stage/bpfmesh-vm/modules/order" ] || die "no virtio/9p modules found in $root"
  {
    printf 'REPO=%q\n' "$REPO"
    printf 'KROOT=%q\n' "$root"
    printf 'TESTS=%q\n' "$TESTS"
    # The socket-path stress runs fewer seeded transfers under emulation.
    printf 'export BPFMESH_SOCKPATH_STRESS_RUNS=%q\n' "${BPFMESH_SOCKPATH_STRESS_RUNS:-12}"
    printf 'export BPFMESH_SOCKPATH_TRIM_RUNS=%q\n' "${BPFMESH_SOCKPATH_TRIM_RUNS:-24}"
    # node --test picks its reporter from its own stdout, a serial port in
    # the guest: follow ours instead (spec on a terminal, TAP in CI logs).
    if [ -t 1 ]; then echo 'export BPFMESH_TEST_REPORTER=spec'; else echo 'export BPFMESH_TEST_REPORTER=tap'; fi
    printf 'export PATH=%q\n' "$(dirname "$NODE"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  } >"$stage/bpfmesh-vm/conf"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$out"
  rm -rf "$stage"
}

SUMMARY=()
FAILED=0
TOTAL_PASS=0
TOTAL_FAIL=0
TOTAL_SKIP=0

for want in "${KERNELS[@]}"; do
  pkg=$(resolve "$want")
  if [ -z "$pkg" ]; then
    SUMMARY+=("$want: FAIL no package matches (apt-get update?)")
    FAILED=1 TOTAL_FAIL=$((TOTAL_FAIL + 1))
    continue
  fi
  started=$(date +%s)
  say "$pkg: fetching and unpacking (cache $CACHE)"
  if ! root=$(unpack "$pkg"); then
    SUMMARY+=("$pkg: FAIL could not fetch or unpack it")
    FAILED=1 TOTAL_FAIL=$((TOTAL_FAIL + 1))
    continue
  fi
  kver=$(ls "$root/lib/modules")
  vmlinuz=$root/boot/vmlinuz-$kver
  [ -f "$vmlinuz" ] || die "$pkg has no /boot/vmlinuz-$kver"
  initrd=$WORK/initrd-$kver.gz
  build_initramfs "$root" "$kver" "$initrd"
  results=$WORK/results-$kver.log
  console=$WORK/console-$kver.log
  : >"$results"
  : >"$console"
  say "$pkg: booting $kver under qemu ($ACCEL, $CPUS vCPU, $MEM MiB, timeout ${TIMEOUT}s): $TESTS"
  booted=$(date +%s)
  timeout -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -nodefaults -no-user-config -display none -no-reboot \
    -machine pc -accel "$ACCEL" -cpu max -smp "$CPUS" -m "$MEM" \
    -kernel "$vmlinuz" -initrd "$initrd" \
    -append "console=ttyS0 loglevel=5 panic=-1 oops=panic" \
    -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap \
    -serial "file:$console" -serial "file:$results" \
    -pidfile "$WORK/qemu.pid" </dev/null >"$WORK/qemu.out" 2>&1 &
  QEMU_PID=$!
  tail -n +1 -f --pid="$QEMU_PID" "$results" &
  TAIL_PID=$!
  qrc=0
  wait "$QEMU_PID" || qrc=$?
  wait "$TAIL_PID" || true
  QEMU_PID= TAIL_PID=
  rm -f "$WORK/qemu.pid"
  ended=$(date +%s)

  line=$(grep -a '^BPFMESH-KERNEL-RESULT ' "$results" | tail -1 || true)
  count() { { grep -a -E "^(# |ℹ )$1 [0-9]+" "$results" || true; } | tail -1 | awk '{ print $3 }'; }
  pass=$(count pass)
  fail=$(count fail)
  skip=$(count skipped)
  pass=${pass:-0} fail=${fail:-0} skip=${skip:-0}
  TOTAL_PASS=$((TOTAL_PASS + pass)) TOTAL_FAIL=$((TOTAL_FAIL + fail)) TOTAL_SKIP=$((TOTAL_SKIP + skip))
  took="$((ended - started)) s (qemu $((ended - booted)) s)"
  if [[ $line =~ rc=0( |$) ]]; then
    SUMMARY+=("$kver ($pkg): PASS $pass passed, $fail failed, $skip skipped in $took")
  else
    FAILED=1
    if [ -z "$line" ]; then
      if [ "$qrc" -eq 124 ] || [ "$qrc" -eq 137 ]; then why="timed out after ${TIMEOUT}s, qemu killed"; else why="the guest stopped without a result (qemu exit $qrc)"; fi
    else
      rc=${line#*rc=}
      rc=${rc%% *}
      case $rc in
        125) why="the guest did not boot: $(grep -a '^bpfmesh-vm:' "$results" | tail -1)" ;;
        124) why="provision.sh kernel-env failed in the guest" ;;
        *) why="node --test exited $rc" ;;
      esac
    fi
    SUMMARY+=("$kver ($pkg): FAIL $pass passed, $fail failed, $skip skipped in $took: $why")
    # A guest that failed without a failing test (no boot, a crash, a
    # timeout) still counts as one failure in the closing line.
    [ "$fail" -gt 0 ] || TOTAL_FAIL=$((TOTAL_FAIL + 1))
    echo "---- $kver: kernel console (last 60 lines) ----"
    tail -n 60 "$console" | tr -d '\r'
    [ -s "$WORK/qemu.out" ] && { echo "---- qemu ----"; cat "$WORK/qemu.out"; }
  fi
done

echo
say "summary, one line per kernel (host: $(uname -r), covered by npm test)"
for s in "${SUMMARY[@]}"; do echo "  $s"; done
echo "kernels: $TOTAL_PASS passed, $TOTAL_FAIL failed, $TOTAL_SKIP skipped"
exit "$FAILED"
