// The node proxy: one Proxy instance per served pod inside this process,
// each with its own listeners and upstream sockets made inside the pod's
// network namespace (pod-sockets.ts), its own identity, discovery and policy
// clients, and its own metrics registry labelled with the pod. Adding and
// removing are serialised per pod; removal closes the pod's listeners,
// connections and its netns fd at once (the pod is gone, nothing to drain).
import { AggregatorRegistry, Registry } from 'prom-client';
import { errorCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { ProxyConfig } from '../config/proxy-env.js';
import { Proxy } from '../proxy/proxy.js';
import { DestinationResolver } from '../control/destination.js';
import { IdentityClient, openIdentityChannel, type WorkloadCertificate } from '../control/identity.js';
import { TlsStore } from '../tls/index.js';
import { InboundAuthorizer } from '../policy/authorizer.js';
import { formatAddr } from '../util/addr.js';
import { PodSockets } from './pod-sockets.js';

/** A pod the node proxy serves, as the agent enrolled it. */
export interface ServedPod {
  uid: string;
  namespace: string;
  name: string;
  serviceAccount: string;
  /** <host-proc>/<pid>/ns/net */
  netnsPath: string;
  /** The netns inode: a new one means a re-created sandbox, served afresh. */
  netnsIno: number;
  incomingPort: number;
  outgoingPort: number;
  /** A worker process: the token file the agent keeps for this pod. */
  tokenFile?: string;
}

/** What the node agent drives: this process's PodProxies, or it plus worker processes (proxy-workers.ts). */
export interface PodProxyHost {
  serve(pod: ServedPod): Promise<boolean>;
  withdraw(uid: string, reason: string): Promise<boolean>;
}

export interface PodProxiesOptions {
  /** The proxy configuration all pods share (LINKERD2_PROXY_* of the agent); listen ports, identity and contexts are set per pod. */
  base: ProxyConfig;
  nodeName: string;
  log: Logger;
  /**
   * The file holding a token for the pod's service account, for its
   * identity (tokens.ts); undefined: the pod gets no identity (no mTLS).
   */
  tokenFileFor?: (pod: ServedPod) => Promise<string | undefined>;
  /** Told when a pod's token file is no longer needed. */
  releaseToken?: (pod: ServedPod) => void;
  /** SO_REUSEPORT on the pods' listeners (default true: a handover to a new node proxy). */
  reusePort?: boolean;
  /** The agent's own registry: the shared identity channel's bpfmesh_control_* metrics go there (no pod labels). */
  registry?: Registry;
}

type IdentityChannel = ReturnType<typeof openIdentityChannel>;

interface Served {
  pod: ServedPod;
  /** The shared identity channel's key, when the pod holds a reference to it. */
  identityChannel: string | undefined;
  sockets: PodSockets;
  proxy: Proxy;
  registry: Registry;
  identity: IdentityClient | undefined;
  authorizer: InboundAuthorizer | undefined;
}

type metricJson = Awaited<ReturnType<Registry['getMetricsAsJSON']>>;

const TRUST_DOMAIN = /\.serviceaccount\.identity\.(.+)$/;
/** How long a pod's listeners wait for its first certificate. */
const CERT_WAIT_MS = 10_000;

function certified(id: IdentityClient, timeoutMs: number): Promise<boolean> {
  if (id.isReady) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      id.off('certificate', done);
      resolve(false);
    }, timeoutMs);
    const done = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    id.once('certificate', done);
  });
}

export class PodProxies implements PodProxyHost {
  readonly #o: PodProxiesOptions;
  readonly #log: Logger;
  readonly #served = new Map<string, Served>();
  /** Per pod, the tail of its add/remove chain. */
  readonly #queue = new Map<string, Promise<void>>();
  /**
   * One channel per identity service address (and name and anchors), shared by
   * every pod: Identity is TLS without a client certificate, so the pods' channels
   * would be identical; each pod's Certify is a call on it. Closed with its last pod.
   */
  readonly #identityChannels = new Map<string, { channel: IdentityChannel; pods: number }>();

  constructor(opts: PodProxiesOptions) {
    this.#o = opts;
    this.#log = opts.log.child({ component: 'node-proxy' });
  }

  get size(): number {
    return this.#served.size;
  }

  uids(): string[] {
    return [...this.#served.keys()];
  }

  /** Open client connections over every served pod. */
  get openConnections(): number {
    let n = 0;
    for (const s of this.#served.values()) n += s.proxy.openConnections;
    return n;
  }

  /** Serves the pod (again, if its netns changed). Resolves once its listeners are up; never rejects (failures are logged and counted by the caller's retry). */
  serve(pod: ServedPod): Promise<boolean> {
    return this.#chain(pod.uid, async () => {
      const cur = this.#served.get(pod.uid);
      if (cur !== undefined && cur.pod.netnsIno === pod.netnsIno && cur.pod.incomingPort === pod.incomingPort && cur.pod.outgoingPort === pod.outgoingPort) return true;
      if (cur !== undefined) await this.#stop(cur, 'netns or ports changed');
      return this.#start(pod);
    });
  }

  /** Stops serving the pod: listeners, connections and its netns fd are closed before this resolves. */
  withdraw(uid: string, reason: string): Promise<boolean> {
    return this.#chain(uid, async () => {
      const cur = this.#served.get(uid);
      if (cur === undefined) return false;
      await this.#stop(cur, reason);
      return true;
    });
  }

  /** Every pod's metrics, each series labelled with its pod (namespace, pod). */
  async metrics(): Promise<Registry> {
    return AggregatorRegistry.aggregate(await this.metricsJson());
  }

  /** The pods' metrics as prom-client JSON (one array per pod), to merge with other processes'. */
  async metricsJson(): Promise<metricJson[]> {
    return Promise.all([...this.#served.values()].map((s) => s.registry.getMetricsAsJSON()));
  }

  /** Handover or stop: stops accepting in every pod, lets open work finish within graceMs, then closes the rest. */
  async shutdown(graceMs: number): Promise<void> {
    const all = [...this.#served.values()];
    await Promise.all(all.map((s) => s.proxy.shutdown(graceMs)));
    for (const s of all) this.#release(s);
    this.#served.clear();
  }

  #chain<T>(uid: string, work: () => Promise<T>): Promise<T> {
    const prev = this.#queue.get(uid) ?? Promise.resolve();
    const next = prev.then(work);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.#queue.set(uid, tail);
    void tail.then(() => {
      if (this.#queue.get(uid) === tail) this.#queue.delete(uid);
    });
    return next;
  }

  async #start(pod: ServedPod): Promise<boolean> {
    const ref = `${pod.namespace}/${pod.name}`;
    const log = this.#o.log.child({ pod: ref });
    let sockets: PodSockets;
    try {
      sockets = new PodSockets(pod.netnsPath, { reusePort: this.#o.reusePort ?? true });
    } catch (err) {
      this.#log.warn({ pod: ref, uid: pod.uid, code: errorCode(err), err: (err as Error).message }, 'cannot serve pod');
      return false;
    }
    if ((this.#o.reusePort ?? true) && !sockets.migrateRequests()) this.#log.info({ pod: ref }, 'net.ipv4.tcp_migrate_req not available: a handover may reset handshakes queued on the old listeners');
    const registry = new Registry();
    registry.setDefaultLabels({ namespace: pod.namespace, pod: pod.name });
    const config = this.#configFor(pod);
    let identity: IdentityClient | undefined;
    let tls: TlsStore | undefined;
    let authorizer: InboundAuthorizer | undefined;
    let proxy: Proxy | undefined;
    let identityChannel: string | undefined;
    try {
      const idConfig = config.identity === undefined ? undefined : await this.#identityFor(pod, config);
      if (idConfig !== undefined) {
        identityChannel = this.#holdIdentityChannel(idConfig);
        const id = new IdentityClient({ config: idConfig, registry, log, channel: this.#identityChannels.get(identityChannel)!.channel });
        const store = new TlsStore({ trustAnchorsPem: id.trustAnchorsPem, identity: id.identity });
        id.on('certificate', (c: WorkloadCertificate) => store.update({ identity: c.identity, keyPem: c.keyPem, certChainPem: c.certPem }));
        identity = id;
        tls = store;
      }
      const resolver = config.destination === undefined ? undefined : new DestinationResolver({ config: config.destination, registry, log, ...(tls ? { tls } : {}) });
      authorizer = config.policy === undefined ? undefined : new InboundAuthorizer({ config: config.policy, registry, log, readyTimeoutMs: config.inbound.httpFailfastTimeoutMs, ...(tls ? { tls } : {}) });
      // No process_*/nodejs_* per pod: they would repeat the one process's figures under every pod's labels, and each
      // pod's event loop monitor alone held ~370 KB (half of a pod's memory; the agent's registry has them once).
      proxy = new Proxy({ config, registry, log, sockets, processMetrics: false, ...(resolver ? { resolver } : {}), ...(tls ? { tls } : {}), ...(authorizer ? { authorizer } : {}) });
      // Certificate first, listeners after: a new node proxy taking over from an old one (or a pod
      // enrolled again) must not accept mTLS traffic it cannot yet serve. Bounded: without an identity
      // service answering, the pod gets its listeners anyway (refused connections help no one).
      if (identity !== undefined) {
        await identity.start();
        if (!(await certified(identity, CERT_WAIT_MS))) this.#log.warn({ pod: ref, identity: identity.identity, waitedMs: CERT_WAIT_MS }, 'no certificate yet; listening anyway (mTLS to and from this pod fails until it comes)');
      }
      await proxy.start();
    } catch (err) {
      this.#log.warn({ pod: ref, uid: pod.uid, code: errorCode(err), err: (err as Error).message }, 'cannot serve pod');
      await proxy?.close();
      identity?.close();
      this.#dropIdentityChannel(identityChannel);
      authorizer?.close();
      sockets.close();
      this.#o.releaseToken?.(pod);
      return false;
    }
    this.#served.set(pod.uid, { pod, identityChannel, sockets, proxy, registry, identity, authorizer });
    this.#log.info({ pod: ref, uid: pod.uid, outbound: proxy.listening.outbound.map(formatAddr), inbound: proxy.listening.inbound.map(formatAddr), identity: identity?.identity }, 'serving pod');
    return true;
  }

  async #stop(s: Served, reason: string): Promise<void> {
    this.#served.delete(s.pod.uid);
    await s.proxy.close();
    this.#release(s);
    this.#log.info({ pod: `${s.pod.namespace}/${s.pod.name}`, uid: s.pod.uid, reason }, 'pod no longer served');
  }

  #release(s: Served): void {
    s.identity?.close();
    this.#dropIdentityChannel(s.identityChannel);
    s.authorizer?.close();
    s.sockets.close();
    this.#o.releaseToken?.(s.pod);
  }

  #holdIdentityChannel(config: NonNullable<ProxyConfig['identity']>): string {
    const key = JSON.stringify([config.svc.addr.host, config.svc.addr.port, config.svc.name ?? null, config.trustAnchorsPem]);
    const held = this.#identityChannels.get(key);
    if (held !== undefined) held.pods++;
    else this.#identityChannels.set(key, { channel: openIdentityChannel(config, this.#log, this.#o.registry), pods: 1 });
    return key;
  }

  #dropIdentityChannel(key: string | undefined): void {
    const held = key === undefined ? undefined : this.#identityChannels.get(key);
    if (held === undefined || --held.pods > 0) return;
    held.channel.close();
    this.#identityChannels.delete(key!);
  }

  #configFor(pod: ServedPod): ProxyConfig {
    const b = this.#o.base;
    const context = JSON.stringify({ ns: pod.namespace, nodeName: this.#o.nodeName, pod: pod.name });
    return {
      ...b,
      outbound: { ...b.outbound, listenAddr: { host: '127.0.0.1', port: pod.outgoingPort } },
      inbound: { ...b.inbound, listenAddr: { host: '0.0.0.0', port: pod.incomingPort } },
      destination: b.destination === undefined ? undefined : { ...b.destination, contextToken: context },
      ...(b.policy === undefined ? {} : { policy: { ...b.policy, workload: JSON.stringify({ ns: pod.namespace, pod: pod.name }) } }),
    };
  }

  /** The pod's own identity: <serviceaccount>.<namespace>.serviceaccount.identity.<trust domain>, certified with a token of that account. */
  async #identityFor(pod: ServedPod, config: ProxyConfig): Promise<ProxyConfig['identity']> {
    const base = config.identity;
    if (base === undefined || this.#o.tokenFileFor === undefined) return undefined;
    const domain = TRUST_DOMAIN.exec(base.localName)?.[1];
    if (domain === undefined) return undefined;
    const tokenFile = await this.#o.tokenFileFor(pod);
    if (tokenFile === undefined) return undefined;
    // No shared LINKERD2_PROXY_IDENTITY_DIR: pods would overwrite each other's files there.
    return { ...base, localName: `${pod.serviceAccount}.${pod.namespace}.serviceaccount.identity.${domain}`, tokenFile, dir: undefined };
  }
}
