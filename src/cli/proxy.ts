// bpfmesh proxy: the sidecar proxy. Configured by the LINKERD2_PROXY_*
// environment a Linkerd injector writes; flags only name the pod.
import { Registry } from 'prom-client';
import { parseProxyFlags } from '../config/pod-flags.js';
import { parseProxyEnv } from '../config/proxy-env.js';
import { createLogger } from '../log/logger.js';
import { Proxy } from '../proxy/proxy.js';
import { registerKernelCounters } from '../proxy/metrics.js';
import { startAdminServer } from '../admin/server.js';
import { podCounterReader } from '../admin/kernel-counters.js';
import { formatAddr } from '../util/addr.js';
import { uncappedYoungGenerationWarning } from '../util/node-flags.js';
// The control-plane clients (gRPC, protobuf, X.509) load only when configured:
// a proxy without them is ~20 MB smaller (README, Benchmarks).
import type { IdentityClient, WorkloadCertificate } from '../control/identity.js';
import type { TlsStore } from '../tls/index.js';

export const usage = `bpfmesh proxy [--pod-name NAME | --netns PATH] [--bpffs DIR]   the sidecar proxy
  Configured by LINKERD2_PROXY_* (outbound 127.0.0.1:4140, inbound 0.0.0.0:4143, admin 127.0.0.1:4191, ...).
  Run it as the proxy uid (2102) inside the pod; it needs no capability. With CAP_BPF and access to
  /sys/fs/bpf it also exports the pod's kernel counters as bpfmesh_* metrics.
`;

export async function run(argv: string[]): Promise<number> {
  const flags = parseProxyFlags(argv);
  const config = parseProxyEnv(process.env);
  const log = createLogger(config.log);
  const registry = new Registry();
  const uncapped = uncappedYoungGenerationWarning();
  if (uncapped !== undefined) log.warn(uncapped);
  // Discovery and identity come from the control plane when the injector configured one.
  let identity: IdentityClient | undefined;
  let tls: TlsStore | undefined;
  if (config.identity !== undefined) {
    const [{ IdentityClient }, { TlsStore }] = await Promise.all([import('../control/identity.js'), import('../tls/index.js')]);
    const id = new IdentityClient({ config: config.identity, registry, log });
    const store = new TlsStore({ trustAnchorsPem: id.trustAnchorsPem, identity: id.identity });
    id.on('certificate', (c: WorkloadCertificate) => store.update({ identity: c.identity, keyPem: c.keyPem, certChainPem: c.certPem }));
    identity = id;
    tls = store;
  }
  // Off loopback, discovery is mTLS with the workload certificate (rebuilt on every rotation).
  const resolver = config.destination === undefined ? undefined : new (await import('../control/destination.js')).DestinationResolver({ config: config.destination, registry, log, ...(tls ? { tls } : {}) });
  // Inbound authorization: the policy API when configured, else the default policy (LINKERD2_PROXY_INBOUND_DEFAULT_POLICY).
  const authorizer = config.policy === undefined ? undefined : new (await import('../policy/authorizer.js')).InboundAuthorizer({ config: config.policy, registry, log, readyTimeoutMs: config.inbound.httpFailfastTimeoutMs, ...(tls ? { tls } : {}) });
  // Tap needs identity (mTLS is what admits the tapper); Linkerd turns it off without, with a warning.
  if (config.tap !== undefined && tls === undefined) log.warn({ tapSvcName: config.tap.svcName }, 'LINKERD2_PROXY_TAP_SVC_NAME is set but identity is disabled; tap stays off');
  const tapHub = config.tap !== undefined && tls !== undefined ? new (await import('../proxy/tap/hub.js')).TapHub({ registry, maxEventsPerSecond: config.tap.maxEventsPerSecond }) : undefined;
  const proxy = new Proxy({ config, registry, log, ...(resolver ? { resolver } : {}), ...(tls ? { tls } : {}), ...(authorizer ? { authorizer } : {}), ...(tapHub ? { tapHub } : {}) });
  await proxy.start();
  const tapServer = tapHub !== undefined && tls !== undefined && config.tap !== undefined ? new (await import('../proxy/tap/server.js')).TapServer({ listen: config.controlListenAddr, config: config.tap, store: tls, hub: tapHub, log, registry }) : undefined;
  if (tapServer !== undefined) log.info({ control: formatAddr(await tapServer.start()), tapSvcName: config.tap?.svcName }, 'tap listening');
  await identity?.start();
  const counters = podCounterReader(flags);
  if ('read' in counters) {
    registerKernelCounters(registry, counters.read);
    log.info({ pinDir: counters.pinDir }, 'exporting kernel counters');
  } else {
    log.info({ reason: counters.reason }, 'kernel counters not exported');
  }
  let stopping: Promise<void> | undefined;
  let stopped!: () => void;
  const done = new Promise<void>((resolve) => (stopped = resolve));
  const stop = (why: string): Promise<void> =>
    (stopping ??= (async () => {
      log.info({ why, graceMs: config.shutdownGracePeriodMs, open: proxy.openConnections }, 'shutting down');
      await tapServer?.close();
      await proxy.shutdown(config.shutdownGracePeriodMs);
      identity?.close();
      authorizer?.close();
      await admin.close();
      stopped();
    })());
  const admin = await startAdminServer({
    host: config.adminListenAddr.host,
    port: config.adminListenAddr.port,
    registry,
    // Linkerd: not ready until the first certificate is installed.
    ready: () => identity?.isReady ?? true,
    shutdownEnabled: config.shutdownEndpointEnabled,
    onShutdown: () => void stop('POST /shutdown'),
    log: log.child({ component: 'admin' }),
  });
  log.info({ admin: formatAddr(admin.address) }, 'admin listening');
  process.once('SIGTERM', () => void stop('SIGTERM'));
  process.once('SIGINT', () => void stop('SIGINT'));
  await done;
  return 0;
}
