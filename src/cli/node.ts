// bpfmesh node: the DaemonSet agent. Watches this node's pods and keeps the
// node-wide interception's enrolled pods equal to its meshed pods.
import { cgroup2Mount } from '../intercept/mounts.js';
import { createLogger } from '../log/logger.js';
import { uncappedYoungGenerationWarning } from '../util/node-flags.js';
import { loadKubeAccess } from '../kube/config.js';
import { KubeClient } from '../kube/client.js';
import { startAdminServer } from '../admin/server.js';
import { parseNodeFlags } from '../node/flags.js';
import { createNodeMetrics } from '../node/metrics.js';
import { NodeAgent } from '../node/agent.js';
import { PodProxies } from '../node/pod-proxies.js';
import { NodeRegistry } from '../node/node-registry.js';
import { parseProxyEnv } from '../config/proxy-env.js';
import { PodTokens } from '../node/pod-tokens.js';
import { startCniServer } from '../node/cni-server.js';
import { ProxyWorkers } from '../node/proxy-workers.js';
import { CniServedPods } from '../node/cni-pods.js';

export const usage = `bpfmesh node [flags]   DaemonSet agent: intercept every meshed pod of this node

  --node-name NAME              this node (default $NODE_NAME; required)
  --kubeconfig PATH[:PATH]      Kubernetes access, files merged as kubectl does (default: $KUBECONFIG, else the in-cluster service account)
  --cgroup-root DIR             cgroup the node-wide programs attach to, above every pod (default: the cgroup2 mount)
  --host-proc DIR               the host's /proc, to find pods' network namespaces (default /proc; run with hostPID)
  --bpffs DIR                   bpf filesystem (default /sys/fs/bpf, mounted if missing)
  --admin-addr HOST:PORT        /live, /ready, /metrics (default 0.0.0.0:4192)
  Pod defaults, as for bpfmesh init (annotations config.linkerd.io/skip-inbound-ports,
  skip-outbound-ports, skip-subnets, proxy-uid, proxy-gid override them per pod):
  --incoming-proxy-port N (4143), --outgoing-proxy-port N (4140), --proxy-uid N (2102), --proxy-gid N,
  --admin-port N (4191), --control-port N (4190), --fail-open, --no-sockpath,
  --sockpath-high-water SIZE (2Mi)
  --log-format plain|json, --log-level LEVEL
  --proxy                       also be the proxy of every enrolled pod without a linkerd-proxy container: one
                                process for the node, its listeners and upstream sockets made in each pod's netns
                                (configured by LINKERD2_PROXY_* as the sidecar; needs CAP_SYS_ADMIN and CAP_NET_ADMIN)
  --proxy-workers N             with --proxy: N more processes serving every pod (listeners side by side,
                                SO_REUSEPORT: the kernel spreads connections), for more than one core (default 0)
  --cni-socket PATH              serve bin/bpfmesh-cni's calls on this unix socket (the plugin's default:
                                /run/bpfmesh/cni.sock), so a pod ADD starts no Node.js process

  Meshed pods: annotated linkerd.io/inject: enabled, or with a linkerd-proxy container
  (unless linkerd.io/inject: disabled). SIGTERM stops the agent and leaves interception in place.
`;

export async function run(argv: string[]): Promise<number> {
  const opts = parseNodeFlags(argv);
  // Listen for the stop signal from the start: a SIGTERM during start-up still exits 0 and leaves pins alone.
  const stopped = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const log = createLogger(opts).child({ component: 'node' });
  const access = loadKubeAccess({ kubeconfig: opts.kubeconfig });
  const client = new KubeClient(access);
  const metrics = createNodeMetrics(opts.nodeName);
  const scope = { bpffs: opts.bpffs, bpffsExplicit: opts.bpffsExplicit, cgroupRoot: opts.cgroupRoot ?? cgroup2Mount() };
  const proxyConfig = opts.proxy ? parseProxyEnv(process.env) : undefined;
  const uncapped = opts.proxy ? uncappedYoungGenerationWarning() : undefined;
  if (uncapped !== undefined) log.warn(uncapped);
  // Each pod's identity is certified with a token of its own service account (TokenRequest), not the agent's.
  const tokens = proxyConfig?.identity === undefined ? undefined : new PodTokens(client, log, { onFailure: () => metrics.failures.inc({ reason: 'token_request' }) });
  const proxies =
    proxyConfig === undefined
      ? undefined
      : new PodProxies({ base: proxyConfig, nodeName: opts.nodeName, log, registry: metrics.registry, ...(tokens ? { tokenFileFor: (p) => tokens.fileFor(p), releaseToken: (p) => tokens.release(p) } : {}) });
  // --proxy-workers: more processes serving every pod beside this one (the kernel spreads connections over them).
  const workers = proxies === undefined || opts.proxyWorkers === 0 ? undefined : new ProxyWorkers(proxies, opts.proxyWorkers, { log, env: { ...process.env, NODE_NAME: opts.nodeName }, ...(tokens ? { tokenPath: (uid) => tokens.pathOf(uid) } : {}) });
  const host = workers ?? proxies;
  // Pods the CNI plugin enrolls (forwarded here, or met later through the API) are served by the node proxy too.
  const cniPods = host === undefined ? undefined : new CniServedPods(host);
  const agent = new NodeAgent({ nodeName: opts.nodeName, scope, hostProc: opts.hostProc, podDefaultArgs: opts.podDefaultArgs, client, log, metrics, ...(host ? { proxies: host, cniPods } : {}) });
  log.info({ node: opts.nodeName, kube: access.source, server: access.server }, 'starting');
  const admin = await startAdminServer({
    host: opts.adminHost,
    port: opts.adminPort,
    registry: host === undefined ? metrics.registry : new NodeRegistry(metrics.registry, workers ?? proxies!),
    ready: () => agent.ready,
    shutdownEnabled: false,
    onShutdown: () => undefined,
    log,
  });
  log.info({ admin: `${admin.address.host}:${admin.address.port}` }, 'admin server listening');
  const cni = opts.cniSocket === undefined ? undefined : await startCniServer(opts.cniSocket, { getPod: (_k8s, namespace, name) => client.getPod(namespace, name), logger: () => log.child({ component: 'cni' }), ...(cniPods ? { nodeProxy: cniPods } : {}) }, log);
  try {
    agent.start();
  } catch (err) {
    await cni?.close();
    await admin.close();
    client.close();
    throw err;
  }
  const signal = await stopped;
  log.info({ signal, meshed: agent.meshed }, 'stopping; interception stays in place');
  await cni?.close();
  await agent.stop();
  if (proxies !== undefined && proxyConfig !== undefined) {
    // A new node proxy listens beside this one (SO_REUSEPORT): stop accepting, let open work finish.
    log.info({ pods: proxies.size, open: proxies.openConnections, graceMs: proxyConfig.shutdownGracePeriodMs }, 'node proxy draining');
    await (workers ?? proxies).shutdown(proxyConfig.shutdownGracePeriodMs);
  }
  tokens?.close();
  await admin.close();
  client.close();
  return 0;
}
