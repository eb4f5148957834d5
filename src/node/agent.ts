// The DaemonSet agent: keeps the node-wide interception's enrolled pods
// equal to the meshed pods of this node. Pods come from a list+watch of the
// Kubernetes API; each one is found on the host by its cgroup (named after
// its UID) and enrolled by its network namespace, under its UID. One pod at
// a time is worked on (the intercept calls are synchronous), in a queue that
// yields to the event loop between pods.
import { Backoff } from '../control/backoff.js';
import { errorCode } from '../errors.js';
import type { Logger } from '../log/logger.js';
import type { KubeClient, KubePod } from '../kube/client.js';
import { PodInformer } from '../kube/informer.js';
import { netnsCookieOf } from '../intercept/pod.js';
import { adoptListeners, enrollPod, ensureNodeInstall, listEnrolled, nodeEnrollmentOf, podInstallOn, removeStalePodInstalls, withdrawPod, type NodeScope } from '../intercept/node-wide.js';
import { hasSidecar, meshDecision, policyKey, policyOf } from './annotations.js';
import type { PodProxyHost } from './pod-proxies.js';
import type { NodeMetrics } from './metrics.js';
import { PodNetnsFinder } from './pod-netns.js';
import { markForNodeProxy, servedPodOf, type CniServedPods } from './cni-pods.js';

/** Pod UIDs only: ids of another shape (a CNI container id) are not ours to withdraw. */
const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface NodeAgentOptions {
  nodeName: string;
  scope: NodeScope;
  hostProc: string;
  /** `bpfmesh init` arguments for the pod defaults; annotations are applied over them. */
  podDefaultArgs: string[];
  client: KubeClient;
  log: Logger;
  metrics: NodeMetrics;
  /** Retry schedule for pods without a cgroup or process yet, and failed enrollments. */
  retry?: { minMs?: number; maxMs?: number };
  /** How often every pod is checked again (a recreated sandbox, a dead netns); default 60 s. */
  resyncMs?: number;
  /** Told when a pod's interception is in place (bench and tests). */
  onEnrolled?: (uid: string, reason: string) => void;
  onWithdrawn?: (uid: string, reason: string) => void;
  /** `--proxy`: the node proxy serves every enrolled pod that has no sidecar of its own. */
  proxies?: PodProxyHost;
  /** Told when the node proxy serves a pod (tests). */
  onServed?: (uid: string) => void;
  /** With proxies: the pods the CNI plugin enrolled, which the node proxy serves as well. */
  cniPods?: CniServedPods;
}

interface PodState {
  uid: string;
  ref: string;
  /** hrtime (ns) when this process first saw the pod wanting interception. */
  seenAt: bigint | undefined;
  /** What is enrolled, as far as this process knows. */
  enrolled: { key: string; ino: number } | undefined;
  /** Enrolled under this UID in the pins (by us now, or found at start). */
  pinned: boolean;
  /** Found pinned at start: the first enrollment adopts it. */
  adopt: boolean;
  /** The annotations last reported as bad, so a pod is reported once per change. */
  badReported: string | undefined;
  /** The pod install (init container) last reported as already intercepting this pod. */
  ownInstallReported: string | undefined;
  waitReported: boolean;
  backoff: Backoff;
  timer: NodeJS.Timeout | undefined;
}

const portsOf = (p: { incomingProxyPort: number; outgoingProxyPort: number }): { incomingPort: number; outgoingPort: number } => ({ incomingPort: p.incomingProxyPort, outgoingPort: p.outgoingProxyPort });

export class NodeAgent {
  readonly #o: NodeAgentOptions;
  readonly #log: Logger;
  readonly #m: NodeMetrics;
  readonly #finder: PodNetnsFinder;
  readonly #informer: PodInformer;
  readonly #states = new Map<string, PodState>();
  readonly #dirty = new Set<string>();
  #draining = false;
  #syncs = 0;
  #ready = false;
  #stopped = false;
  #resync: NodeJS.Timeout | undefined;

  constructor(opts: NodeAgentOptions) {
    this.#o = opts;
    this.#log = opts.log;
    this.#m = opts.metrics;
    this.#finder = new PodNetnsFinder(opts.scope.cgroupRoot, opts.hostProc);
    this.#informer = new PodInformer(
      opts.client,
      { upsert: (p) => this.#onUpsert(p), remove: (p) => this.#mark(p.metadata.uid), synced: (pods) => this.#onSynced(pods) },
      {
        fieldSelector: `spec.nodeName=${opts.nodeName}`,
        log: opts.log.child({ component: 'informer' }),
        onStat: (what) => {
          if (what === 'lists') this.#m.kubeLists.inc();
          else if (what === 'expired') this.#m.kubeExpired.inc();
          else if (what === 'errors') this.#m.kubeErrors.inc();
          else if (what === 'stalls') this.#m.kubeStalls.inc();
          else if (what === 'throttled') this.#m.kubeThrottled.inc();
        },
      },
    );
  }

  /** True once the first list has been reconciled. */
  get ready(): boolean {
    return this.#ready;
  }

  get meshed(): number {
    let n = 0;
    for (const s of this.#states.values()) if (s.enrolled) n++;
    return n;
  }

  /** Installs (or refreshes) the node-wide programs, then starts watching. Throws when the install fails. */
  start(): void {
    const r = ensureNodeInstall(this.#o.scope, this.#log, { refresh: true });
    this.#log.info({ cgroupRoot: this.#o.scope.cgroupRoot, bpffs: this.#o.scope.bpffs, fresh: r.fresh, node: this.#o.nodeName }, 'node-wide interception ready; watching pods');
    this.#informer.start();
    this.#resync = setInterval(() => this.#resyncAll(), this.#o.resyncMs ?? 60_000);
    this.#resync.unref();
  }

  /** Stops watching. Interception stays in place: pods keep working while the agent restarts. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#resync);
    for (const s of this.#states.values()) clearTimeout(s.timer);
    await this.#informer.stop();
  }

  #state(uid: string, pod?: KubePod): PodState {
    let s = this.#states.get(uid);
    if (s === undefined) {
      s = {
        uid,
        ref: pod ? `${pod.metadata.namespace}/${pod.metadata.name}` : uid,
        seenAt: undefined,
        enrolled: undefined,
        pinned: false,
        adopt: false,
        badReported: undefined,
        ownInstallReported: undefined,
        waitReported: false,
        backoff: new Backoff({ minMs: this.#o.retry?.minMs ?? 20, maxMs: this.#o.retry?.maxMs ?? 2000, jitter: 0.3 }),
        timer: undefined,
      };
      this.#states.set(uid, s);
    }
    return s;
  }

  #onUpsert(pod: KubePod): void {
    const s = this.#state(pod.metadata.uid, pod);
    if (s.seenAt === undefined && s.enrolled === undefined && meshDecision(pod).mesh) s.seenAt = process.hrtime.bigint();
    this.#mark(pod.metadata.uid);
  }

  /** After each (re)list: what is pinned but gone from the list is withdrawn; dead netns are withdrawn and redone. */
  #onSynced(pods: ReadonlyMap<string, KubePod>): void {
    const first = this.#syncs++ === 0;
    let enrolled: ReturnType<typeof listEnrolled>;
    try {
      enrolled = listEnrolled(this.#o.scope);
    } catch (err) {
      this.#m.failures.inc({ reason: 'list_enrolled' });
      this.#log.error({ err: (err as Error).message }, 'cannot read the enrolled pods');
      return;
    }
    for (const e of enrolled) {
      if (!UID.test(e.id)) continue;
      const s = this.#state(e.id, pods.get(e.id));
      s.pinned = true;
      if (!pods.has(e.id)) {
        this.#withdraw(s, first ? 'gone_while_down' : 'deleted');
        this.#states.delete(e.id);
        continue;
      }
      if (!e.alive) {
        this.#withdraw(s, 'netns_gone');
        s.seenAt ??= process.hrtime.bigint();
      } else if (first && s.enrolled === undefined) {
        s.adopt = true;
      }
      this.#mark(e.id);
    }
    try {
      const stale = removeStalePodInstalls(this.#o.scope.bpffs, this.#log);
      if (stale.length > 0) this.#m.withdrawals.inc({ reason: 'stale_pod_install' }, stale.length);
    } catch (err) {
      this.#m.failures.inc({ reason: 'stale_pod_install' });
      this.#log.warn({ err: (err as Error).message }, 'cannot remove stale pod installs');
    }
    if (first) this.#log.info({ pods: pods.size, enrolled: enrolled.length }, "first list of this node's pods; reconciling with what is enrolled");
    this.#mark(undefined); // a drain even with nothing to do: it is what turns ready
  }

  #resyncAll(): void {
    if (this.#stopped || this.#syncs === 0) return;
    this.#onSynced(this.#informer.pods);
    for (const uid of this.#states.keys()) this.#mark(uid);
  }

  #mark(uid: string | undefined): void {
    if (this.#stopped) return;
    if (uid !== undefined) this.#dirty.add(uid);
    if (!this.#draining) {
      this.#draining = true;
      setImmediate(() => this.#drain());
    }
  }

  #drain(): void {
    const until = Date.now() + 20;
    while (this.#dirty.size > 0 && Date.now() < until && !this.#stopped) {
      const uid = this.#dirty.values().next().value as string;
      this.#dirty.delete(uid);
      try {
        this.#process(uid);
      } catch (err) {
        this.#log.error({ pod: uid, err: (err as Error).message, code: errorCode(err) }, 'pod reconcile failed');
      }
    }
    if (this.#dirty.size > 0 && !this.#stopped) {
      setImmediate(() => this.#drain());
      return;
    }
    this.#draining = false;
    this.#m.podsMeshed.set(this.meshed);
    let waiting = 0;
    for (const s of this.#states.values()) if (s.timer !== undefined && s.enrolled === undefined) waiting++;
    this.#m.podsWaiting.set(waiting);
    if (!this.#ready && this.#syncs > 0) {
      this.#ready = true;
      this.#log.info({ meshed: this.meshed }, 'reconciled; ready');
    }
  }

  #process(uid: string): void {
    const pod = this.#informer.pods.get(uid);
    const s = this.#states.get(uid);
    if (pod === undefined) {
      if (s !== undefined) {
        clearTimeout(s.timer);
        this.#withdraw(s, 'deleted');
        this.#states.delete(uid);
      }
      return;
    }
    const st = s ?? this.#state(uid, pod);
    st.ref = `${pod.metadata.namespace}/${pod.metadata.name}`;
    const decision = meshDecision(pod);
    if (!decision.mesh) {
      clearTimeout(st.timer);
      st.timer = undefined;
      st.seenAt = undefined;
      this.#withdraw(st, decision.reason === 'not_annotated' || decision.reason === 'disabled' ? 'unmeshed' : decision.reason);
      return;
    }
    let policy;
    try {
      policy = policyOf(pod, this.#o.podDefaultArgs);
    } catch (err) {
      const annotations = JSON.stringify(pod.metadata.annotations ?? {});
      // An enrolled pod keeps its last good policy: withdrawing it would let
      // its traffic bypass the proxy (and mTLS) over a typo.
      const keep = st.enrolled !== undefined;
      if (st.badReported !== annotations) {
        st.badReported = annotations;
        this.#m.failures.inc({ reason: 'bad_annotation' });
        const msg = keep ? 'bad annotation; keeping the last good policy' : 'pod not meshed: bad annotation';
        this.#log.warn({ pod: st.ref, uid, code: errorCode(err), err: (err as Error).message }, msg);
      }
      if (!keep) this.#withdraw(st, 'bad_annotation');
      return;
    }
    st.badReported = undefined;
    // The node proxy and a sidecar never steer the same pod: a pod with its own proxy container keeps it.
    const nodeProxy = this.#o.proxies !== undefined && !hasSidecar(pod);
    if (nodeProxy) policy = { ...policy, nodeProxy: true };
    else void this.#o.proxies?.withdraw(uid, 'sidecar');
    st.seenAt ??= process.hrtime.bigint();
    const key = policyKey(policy);
    const where = this.#finder.find(uid);
    if ('missing' in where) {
      if (where.missing === 'host_netns') {
        if (!st.waitReported) this.#m.failures.inc({ reason: 'host_netns' });
        this.#log[st.waitReported ? 'debug' : 'warn']({ pod: st.ref, uid }, "pod's processes are in the node's network namespace; not meshed");
      } else {
        this.#log[st.waitReported ? 'trace' : 'debug']({ pod: st.ref, uid, why: where.missing }, 'pod has no process yet; waiting');
      }
      st.waitReported = true;
      this.#retry(st, where.missing === 'host_netns');
      return;
    }
    st.waitReported = false;
    const own = podInstallOn(this.#o.scope.bpffs, where.found.ino);
    if (own !== null) {
      // An init container intercepts this pod already; a node-wide enrollment would steer it twice.
      if (st.ownInstallReported !== own) {
        st.ownInstallReported = own;
        this.#log.warn({ pod: st.ref, uid, podInstall: own }, 'pod has its own bpfmesh init install; not enrolling it node-wide');
      }
      if (st.enrolled !== undefined) this.#withdraw(st, 'pod_install');
      return this.#retry(st, true);
    }
    st.ownInstallReported = undefined;
    if (st.enrolled === undefined) {
      // The CNI plugin enrolls by container id: the same netns under another id means it covers this pod.
      let other: string | null = null;
      try {
        other = nodeEnrollmentOf(this.#o.scope.bpffs, netnsCookieOf(where.found.path));
      } catch {
        /* the netns went meanwhile: the enroll below reports it */
      }
      if (other !== null && other !== uid) {
        if (nodeProxy) return this.#serveEnrolledElsewhere(st, pod, where.found, other);
        this.#log.info({ pod: st.ref, uid, enrolledAs: other }, 'pod is enrolled node-wide under another id (the CNI plugin); leaving it');
        return this.#done(st);
      }
    }
    if (st.enrolled?.key === key && st.enrolled.ino === where.found.ino) {
      this.#done(st);
      if (nodeProxy) this.#serve(st, pod, where.found, portsOf(policy));
      return; // nothing changed
    }
    let result;
    try {
      result = enrollPod(this.#o.scope, uid, where.found.path, policy, this.#log);
    } catch (err) {
      this.#m.failures.inc({ reason: 'enroll' });
      this.#log.warn({ pod: st.ref, uid, netns: where.found.path, code: errorCode(err), err: (err as Error).message }, 'enroll failed; retrying');
      this.#retry(st, false);
      return;
    }
    if (result.fresh) this.#adoptListeners(st, result.netnsCookie, policy.incomingProxyPort, where.found.cgroup);
    const before = st.enrolled;
    const reason = st.adopt && !result.fresh ? 'adopted' : result.fresh ? (before || st.pinned ? 'moved' : 'new') : 'updated';
    st.enrolled = { key, ino: where.found.ino };
    st.pinned = true;
    st.adopt = false;
    this.#m.installs.inc({ reason });
    const changed = result.policy.ports.added + result.policy.ports.removed + result.policy.subnets.added + result.policy.subnets.removed;
    const fields = { pod: st.ref, uid, reason, netnsCookie: result.netnsCookie.toString(), sandboxPid: where.found.pid, rowsChanged: changed };
    if (reason === 'new' || reason === 'moved') {
      const seconds = st.seenAt === undefined ? undefined : Number(process.hrtime.bigint() - st.seenAt) / 1e9;
      if (seconds !== undefined) this.#m.timeToIntercept.observe(seconds);
      this.#log.info({ ...fields, ms: seconds === undefined ? undefined : Math.round(seconds * 1e4) / 10 }, 'interception in place');
    } else {
      this.#log.info(fields, reason === 'adopted' ? 'interception adopted' : 'interception updated');
    }
    st.seenAt = undefined;
    this.#done(st);
    if (nodeProxy) this.#serve(st, pod, where.found, portsOf(policy));
    this.#o.onEnrolled?.(uid, reason);
  }

  /**
   * The CNI plugin enrolled this pod under its container id (its rows and link
   * stand, one set per pod): the node proxy serves it all the same, under the
   * pod's UID, so a pod the plugin met first is not left without its proxy.
   */
  #serveEnrolledElsewhere(st: PodState, pod: KubePod, where: { path: string; ino: number }, id: string): void {
    let ports;
    try {
      ports = markForNodeProxy(this.#o.scope, where.path);
    } catch (err) {
      this.#m.failures.inc({ reason: 'serve' });
      this.#log.warn({ pod: st.ref, uid: st.uid, enrolledAs: id, code: errorCode(err), err: (err as Error).message }, 'cannot mark the CNI enrollment for the node proxy; retrying');
      return this.#retry(st, false);
    }
    if (ports === null) return this.#retry(st, false); // withdrawn meanwhile: enrolled afresh on the next pass
    this.#done(st);
    this.#o.cniPods?.note(id, st.uid);
    this.#log.debug({ pod: st.ref, uid: st.uid, enrolledAs: id }, 'pod enrolled by the CNI plugin; the node proxy serves it');
    this.#serve(st, pod, where, ports);
  }

  /** After the pod's rows exist (so sockops registers the inbound listener): the node proxy listens in its netns. */
  #serve(st: PodState, pod: KubePod, where: { path: string; ino: number }, ports: { incomingPort: number; outgoingPort: number }): void {
    const proxies = this.#o.proxies;
    if (proxies === undefined) return;
    void proxies.serve(servedPodOf(pod, where.path, where.ino, ports)).then((ok) => {
      if (ok) this.#o.onServed?.(st.uid);
      else {
        this.#m.failures.inc({ reason: 'serve' });
        this.#retry(st, false);
      }
    });
  }

  /**
   * A proxy that listened before its pod was enrolled (containers can start
   * before the API tells us of the pod) was never seen by sockops: register its listener now.
   */
  #adoptListeners(st: PodState, netnsCookie: bigint, port: number, cgroup: string): void {
    try {
      const n = adoptListeners(this.#o.scope, netnsCookie, port, this.#finder.pidsOf(cgroup), this.#o.hostProc);
      if (n > 0) this.#log.info({ pod: st.ref, uid: st.uid, listeners: n }, "registered the proxy's listener that was already open");
    } catch (err) {
      this.#m.failures.inc({ reason: 'adopt_listener' });
      this.#log.warn({ pod: st.ref, uid: st.uid, code: errorCode(err), err: (err as Error).message }, "cannot register the proxy's open listener (needs CAP_SYS_PTRACE); inbound steering starts when the proxy listens again");
    }
  }

  #done(st: PodState): void {
    clearTimeout(st.timer);
    st.timer = undefined;
    st.backoff.reset();
  }

  #retry(st: PodState, slow: boolean): void {
    if (st.timer !== undefined || this.#stopped) return;
    const delay = slow ? st.backoff.slow() : st.backoff.next();
    st.timer = setTimeout(() => {
      st.timer = undefined;
      this.#mark(st.uid);
    }, delay);
  }

  #withdraw(st: PodState, reason: string): void {
    void this.#o.proxies?.withdraw(st.uid, reason);
    if (!st.pinned && st.enrolled === undefined) return;
    let removed = false;
    try {
      removed = withdrawPod(this.#o.scope, st.uid, this.#log);
    } catch (err) {
      this.#m.failures.inc({ reason: 'withdraw' });
      this.#log.error({ pod: st.ref, uid: st.uid, code: errorCode(err), err: (err as Error).message }, 'withdraw failed');
      return;
    }
    st.enrolled = undefined;
    st.pinned = false;
    st.adopt = false;
    if (removed) {
      this.#m.withdrawals.inc({ reason });
      this.#log.info({ pod: st.ref, uid: st.uid, reason }, 'interception withdrawn');
      this.#o.onWithdrawn?.(st.uid, reason);
    }
  }
}
