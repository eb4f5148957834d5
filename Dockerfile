# syntax=docker/dockerfile:1
# bpfmesh: one image for every mode (docker build -t bpfmesh:0.1.0 .).
#   proxy (default)  the sidecar, as uid 2102 with no capabilities
#   init             the init container that replaces linkerd-init (root + CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)
#   node             the DaemonSet agent (root, hostPID, host mounts)
#   cni-install      the CNI DaemonSet: copies /app, Node and libbpf to the host and adds the plugin
# The manifests in deploy/ set the user and capabilities per mode.

# ---- build: the addon (C++ over libbpf), the BPF objects (CO-RE) and dist/ ----
# Node 24 LTS, as CI (scripts/install-node.sh pins the same major) and the
# CNI bundle: cni-install copies this image's Node to the nodes.
FROM node:24-bookworm AS build
WORKDIR /src
# node-gyp builds the addon against the image's own headers
# (/usr/local/include/node) instead of downloading them.
ENV npm_config_nodedir=/usr/local
# The one install script (also run by .ci/run and vagrant/provision.sh), build part only.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh build
# vmlinux.h is dumped from this BTF. CO-RE objects relocate at load time, so
# the build host's kernel need not be the nodes' kernel; where the builder
# has no /sys/kernel/btf/vmlinux, put a BTF file in the context and pass
# --build-arg VMLINUX_BTF=/src/<file> (and let it through .dockerignore).
ARG VMLINUX_BTF=/sys/kernel/btf/vmlinux
COPY package.json package-lock.json binding.gyp tsconfig.json ./
COPY bpf bpf
COPY native native
COPY src src
COPY proto proto
COPY bin bin
# npm ci runs the package's install (node-gyp: addon + BPF objects) and prepare (tsc) scripts.
RUN npm ci --no-audit --no-fund \
 && test -f build/Release/bpfmesh.node && test -f build/bpf/intercept.bpf.o && test -f build/bpf/inbound.bpf.o \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime: Node, libbpf and the artifacts ----
FROM node:24-bookworm-slim
# libbpf1: the addon links it (it pulls libelf1 and zlib1g). bpftool: to
# read the data path from inside the pod (kubectl exec ... bpftool cgroup
# tree). No iproute2: no mode runs ip; the init and node modes mount bpffs
# with mount(8), which the slim image has. libbpf, libelf and libz are also
# copied to /app/lib: the CNI plugin runs on the host, which may have no
# libbpf, and cni-install copies /app there.
COPY scripts/install-deps.sh /tmp/install-deps.sh
RUN bash /tmp/install-deps.sh image && rm /tmp/install-deps.sh \
 && groupadd --gid 2102 bpfmesh-proxy \
 && useradd --uid 2102 --gid 2102 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bpfmesh-proxy \
 && mkdir -p /app/lib \
 && for l in libbpf.so.1 libelf.so.1 libz.so.1; do cp -L "$(ldconfig -p | awk -v l="$l" '$1 == l { print $NF; exit }')" /app/lib/; done
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist/src dist/src
COPY --from=build /src/build/Release/bpfmesh.node /src/build/Release/bpfmesh-cni-forward build/Release/
COPY --from=build /src/build/bpf/intercept.bpf.o /src/build/bpf/inbound.bpf.o build/bpf/
COPY --from=build /src/proto proto
COPY --from=build /src/bin bin
# Fails the build if the addon cannot load its libraries here, or a command module is broken.
RUN ln -s /app/bin/bpfmesh.js /usr/local/bin/bpfmesh \
 && node -e "require('/app/build/Release/bpfmesh.node')" \
 && bpfmesh --help >/dev/null
# V8's young generation grows to 2 x 32 MiB under load by default and stays
# resident; 4 MiB semi-spaces keep the proxy's RSS ~35 MB lower after load at
# ~0.3% CPU in extra scavenges (README, Benchmarks: BENCH_ONLY=memory, whose
# IMAGE_NODE_OPTIONS in bench/memory.ts must stay the same).
ENV NODE_OPTIONS=--max-semi-space-size=4
# The proxy's uid, as Linkerd's injector expects; the other modes run as root (deploy/).
USER 2102:2102
ENTRYPOINT ["/app/bin/bpfmesh.js"]
CMD ["proxy"]
