// List then watch a set of pods and keep a copy of it: resume the watch from
// the last resourceVersion seen (an event or a bookmark) when it ends or
// drops, and list again on 410 Gone. What changes is told to a handler;
// after every (re)list the handler also gets the whole set, so it can drop
// what it holds and the set no longer has.
//
// Request rate bound: after a watch that lasted less than healthyWatchMs
// (however it ended: error, ERROR event, 410, reset, stall, or a clean but
// early end) the next attempt waits the next backoff delay, and at least the
// server's Retry-After. So while the API server fails, one attempt (a LIST
// and its WATCH, or a WATCH) is made per backoff delay; only a watch that
// stayed up for healthyWatchMs resets the backoff and resumes at once.
import { Backoff, type BackoffOptions } from '../control/backoff.js';
import type { Logger } from '../log/logger.js';
import { isExpired, KubeApiError, type KubeClient, type KubePod, type WatchEvent } from './client.js';

export interface PodSetHandler {
  /** A pod appeared or changed (also for each pod of a relist that is new or changed). */
  upsert(pod: KubePod): void;
  /** A pod went away (a DELETED event, or missing from a relist). */
  remove(pod: KubePod): void;
  /** A list completed; `pods` is the whole current set, by UID. */
  synced?(pods: ReadonlyMap<string, KubePod>): void;
}

export interface PodInformerOptions {
  fieldSelector?: string;
  labelSelector?: string;
  log: Logger;
  backoff?: BackoffOptions;
  /** Server-side watch timeout; the informer resumes right after. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** A watch with no event or bookmark for this long is restarted; default DEFAULT_WATCH_STALL_MS (120 s). */
  watchStallMs?: number;
  /** A watch that stayed up this long counts as healthy: the backoff resets. Default 10 s. */
  healthyWatchMs?: number;
  /** Told of each list, expiry and failed request (for metrics). */
  onStat?: (what: keyof InformerStats) => void;
}

export interface InformerStats {
  lists: number;
  watches: number;
  expired: number;
  errors: number;
  /** Watches restarted for lack of events or bookmarks (counted in errors too). */
  stalls: number;
  /** Retries delayed by the server's Retry-After. */
  throttled: number;
}

export const INFORMER_BACKOFF = { minMs: 200, maxMs: 30_000, jitter: 0.5 } as const;
export const HEALTHY_WATCH_MS = 10_000;

export class PodInformer {
  readonly #client: KubeClient;
  readonly #handler: PodSetHandler;
  readonly #opts: PodInformerOptions;
  readonly #log: Logger;
  readonly #pods = new Map<string, KubePod>();
  readonly #abort = new AbortController();
  readonly #backoff: Backoff;
  #resourceVersion = '';
  #running: Promise<void> | undefined;
  #synced = false;
  #syncWaiters: Array<() => void> = [];
  readonly stats: InformerStats = { lists: 0, watches: 0, expired: 0, errors: 0, stalls: 0, throttled: 0 };

  constructor(client: KubeClient, handler: PodSetHandler, opts: PodInformerOptions) {
    this.#client = client;
    this.#handler = handler;
    this.#opts = opts;
    this.#log = opts.log;
    this.#backoff = new Backoff({ ...INFORMER_BACKOFF, ...opts.backoff });
  }

  /** The current set, by UID. */
  get pods(): ReadonlyMap<string, KubePod> {
    return this.#pods;
  }

  get resourceVersion(): string {
    return this.#resourceVersion;
  }

  get hasSynced(): boolean {
    return this.#synced;
  }

  start(): void {
    this.#running ??= this.#loop();
  }

  /** Resolves after the first complete list (or when stopped). */
  waitForSync(): Promise<void> {
    if (this.#synced || this.#abort.signal.aborted) return Promise.resolve();
    return new Promise((r) => this.#syncWaiters.push(r));
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    for (const w of this.#syncWaiters.splice(0)) w();
    await this.#running;
  }

  async #loop(): Promise<void> {
    const signal = this.#abort.signal;
    const healthyMs = this.#opts.healthyWatchMs ?? HEALTHY_WATCH_MS;
    let needList = true;
    while (!signal.aborted) {
      let watchStart: number | undefined;
      let failure: unknown;
      try {
        if (needList) {
          await this.#list();
          needList = false;
        }
        this.#count('watches');
        watchStart = Date.now();
        await this.#client.watchPods(
          {
            resourceVersion: this.#resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: this.#opts.watchTimeoutSeconds ?? 300,
            ...(this.#opts.watchStallMs !== undefined ? { stallMs: this.#opts.watchStallMs } : {}),
            ...(this.#opts.fieldSelector ? { fieldSelector: this.#opts.fieldSelector } : {}),
            ...(this.#opts.labelSelector ? { labelSelector: this.#opts.labelSelector } : {}),
          },
          (ev) => this.#apply(ev),
          signal,
        );
      } catch (err) {
        failure = err;
      }
      if (signal.aborted) break;
      // Healthy = up long enough; events alone prove nothing (a server can send one and reset).
      const healthy = watchStart !== undefined && Date.now() - watchStart >= healthyMs;
      if (healthy) this.#backoff.reset();
      let delay = healthy ? 0 : this.#backoff.next();
      if (failure === undefined) {
        this.#log.debug({ resourceVersion: this.#resourceVersion, retryInMs: delay }, 'watch ended; resuming');
      } else if (isExpired(failure)) {
        this.#count('expired');
        needList = true;
        this.#log.info({ resourceVersion: this.#resourceVersion, err: (failure as Error).message, retryInMs: delay }, 'resourceVersion expired; listing again');
      } else {
        this.#count('errors');
        if (failure instanceof KubeApiError && failure.stalled) this.#count('stalls');
        const after = failure instanceof KubeApiError ? failure.retryAfterMs : undefined;
        if (after !== undefined && after > delay) {
          this.#count('throttled');
          delay = after;
        }
        if (delay === 0) delay = this.#backoff.next();
        this.#log.warn({ err: (failure as Error).message, retryInMs: delay, relist: needList }, 'pod watch failed; retrying');
      }
      if (delay > 0) await this.#sleep(delay);
    }
  }

  async #list(): Promise<void> {
    this.#count('lists');
    const { items, resourceVersion } = await this.#client.listPods({
      ...(this.#opts.fieldSelector ? { fieldSelector: this.#opts.fieldSelector } : {}),
      ...(this.#opts.labelSelector ? { labelSelector: this.#opts.labelSelector } : {}),
    });
    if (this.#abort.signal.aborted) return;
    const fresh = new Map(items.map((p) => [p.metadata.uid, p]));
    for (const [uid, old] of this.#pods) {
      if (!fresh.has(uid)) {
        this.#pods.delete(uid);
        this.#handler.remove(old);
      }
    }
    for (const [uid, pod] of fresh) {
      const old = this.#pods.get(uid);
      this.#pods.set(uid, pod);
      if (old === undefined || old.metadata.resourceVersion !== pod.metadata.resourceVersion) this.#handler.upsert(pod);
    }
    this.#resourceVersion = resourceVersion;
    this.#log.debug({ pods: fresh.size, resourceVersion }, 'pods listed');
    this.#handler.synced?.(this.#pods);
    this.#synced = true;
    for (const w of this.#syncWaiters.splice(0)) w();
  }

  #apply(ev: WatchEvent): void {
    const rv = ev.object.metadata.resourceVersion;
    if (ev.type === 'BOOKMARK') {
      if (rv) this.#resourceVersion = rv;
      return;
    }
    const uid = ev.object.metadata.uid;
    if (ev.type === 'DELETED') {
      const old = this.#pods.get(uid);
      this.#pods.delete(uid);
      this.#handler.remove(old ?? ev.object);
    } else {
      this.#pods.set(uid, ev.object);
      this.#handler.upsert(ev.object);
    }
    if (rv) this.#resourceVersion = rv;
  }

  #count(what: keyof InformerStats): void {
    this.stats[what]++;
    this.#opts.onStat?.(what);
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#abort.signal;
      if (signal.aborted) return resolve();
      const t = setTimeout(done, ms);
      function done(): void {
        clearTimeout(t);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done, { once: true });
    });
  }
}
