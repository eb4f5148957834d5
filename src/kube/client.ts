// A small Kubernetes API client for pods over node:https (node:http for a
// plain-HTTP server in tests): get, list and watch. Watch streams are
// newline-delimited JSON events on a chunked response.
//
// Failures are classified so callers can be gentle with a failing API
// server: 410 (an HTTP status or a watch ERROR event) is "expired" (list
// again); every other status is an API error that carries the server's
// Retry-After (header or Status details.retryAfterSeconds) when it sent one;
// a watch that delivers no complete event or bookmark for stallMs is ended
// as stalled (a dead connection, or a server trickling bytes).
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { KubeAccess } from './config.js';
import { createKubeAgent } from './transport.js';

export interface ObjectMeta {
  name: string;
  namespace: string;
  uid: string;
  resourceVersion?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
  deletionTimestamp?: string;
  creationTimestamp?: string;
}

/** The fields of a Pod that bpfmesh reads. */
export interface KubePod {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: { nodeName?: string; hostNetwork?: boolean; [k: string]: unknown };
  status?: { phase?: string; podIP?: string; [k: string]: unknown };
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';

export interface WatchEvent {
  type: Exclude<WatchEventType, 'ERROR'>;
  object: KubePod;
}

export interface ListOptions {
  fieldSelector?: string;
  labelSelector?: string;
  /** Page size; the client follows `continue` until the list is complete. */
  limit?: number;
}

export interface WatchOptions {
  fieldSelector?: string;
  labelSelector?: string;
  resourceVersion: string;
  allowWatchBookmarks?: boolean;
  /** The server ends the watch after this long (the caller then resumes); default 300. */
  timeoutSeconds?: number;
  /** No complete event or bookmark for this long ends the watch as stalled; default DEFAULT_WATCH_STALL_MS. */
  stallMs?: number;
}

export interface KubeClientOptions {
  /** Whole-request deadline for get and list (connect to last byte); default 30 s. */
  requestTimeoutMs?: number;
}

/** The API server sends a bookmark about once a minute on a quiet watch; two missed ones = stalled. */
export const DEFAULT_WATCH_STALL_MS = 120_000;
/** One watch event (a pod) above this is refused: etcd's own limit is 1.5 MiB. */
export const MAX_EVENT_BYTES = 4 << 20;
/** A list or get answer above this is refused. */
export const MAX_BODY_BYTES = 64 << 20;
/** A Retry-After above this is taken as this. */
export const MAX_RETRY_AFTER_MS = 10 * 60_000;

/** An error status from the API server (or no answer at all: status 0). */
export class KubeApiError extends BpfmeshError {
  readonly status: number;
  /** How long the server asked us to wait (Retry-After, or a Status's details.retryAfterSeconds). */
  readonly retryAfterMs: number | undefined;
  /** The watch delivered nothing for its stall timeout (or trickled bytes without completing an event). */
  readonly stalled: boolean;
  constructor(status: number, message: string, opts: { cause?: unknown; retryAfterMs?: number | undefined; stalled?: boolean } = {}) {
    super(status === 410 ? ErrorCodes.KUBE_EXPIRED : ErrorCodes.KUBE_API, message, opts.cause === undefined ? {} : { cause: opts.cause });
    this.name = 'KubeApiError';
    this.status = status;
    this.retryAfterMs = opts.retryAfterMs;
    this.stalled = opts.stalled ?? false;
  }
}

/** The resourceVersion asked for is gone (410, as a status or an ERROR event): list again. */
export const isExpired = (err: unknown): boolean => err instanceof BpfmeshError && err.code === ErrorCodes.KUBE_EXPIRED;

interface StatusObject {
  code?: number;
  reason?: string;
  message?: string;
  details?: { retryAfterSeconds?: number };
}

function parseStatus(body: string): StatusObject | undefined {
  try {
    const s = JSON.parse(body) as unknown;
    return typeof s === 'object' && s !== null ? s : undefined;
  } catch {
    return undefined; // not a Status object
  }
}

function statusMessage(body: string): string {
  const s = parseStatus(body);
  if (typeof s?.message === 'string') return s.reason ? `${s.reason}: ${s.message}` : s.message;
  return body.slice(0, 200);
}

/** Retry-After as delta-seconds or an HTTP date (RFC 9110 10.2.3), else details.retryAfterSeconds; capped. */
export function retryAfterMs(header: string | undefined, status: StatusObject | undefined, now = Date.now()): number | undefined {
  let ms: number | undefined;
  if (header !== undefined && header.trim() !== '') {
    const t = header.trim();
    if (/^\d+$/.test(t)) ms = Number(t) * 1000;
    else {
      const at = Date.parse(t);
      if (!Number.isNaN(at)) ms = Math.max(0, at - now);
    }
  }
  const secs = status?.details?.retryAfterSeconds;
  if (ms === undefined && typeof secs === 'number' && secs > 0) ms = secs * 1000;
  return ms === undefined ? undefined : Math.min(ms, MAX_RETRY_AFTER_MS);
}

export class KubeClient {
  readonly access: KubeAccess;
  #agent: HttpAgent;
  /** Pools replaced when an exec plugin handed out a new client certificate; closed with the client. */
  readonly #retired: HttpAgent[] = [];
  #agentCert: Buffer | undefined;
  readonly #https: boolean;
  readonly #timeoutMs: number;

  constructor(access: KubeAccess, opts: KubeClientOptions = {}) {
    this.access = access;
    this.#https = access.server.startsWith('https:');
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#agent = createKubeAgent(access);
    this.#agentCert = access.cert;
  }

  /** One pod, or null when it does not exist (404). */
  async getPod(namespace: string, name: string): Promise<KubePod | null> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`;
    try {
      return (await this.#getJson(path)) as KubePod;
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return null;
      throw err;
    }
  }

  /**
   * A token for a service account (TokenRequest, authentication.k8s.io/v1),
   * bound to one pod: it stops being valid when that pod is deleted.
   */
  async createToken(namespace: string, serviceAccount: string, req: { audience: string; expirationSeconds: number; pod: { name: string; uid: string } }): Promise<{ token: string; expiresAt: number }> {
    const path = `/api/v1/namespaces/${encodeURIComponent(namespace)}/serviceaccounts/${encodeURIComponent(serviceAccount)}/token`;
    const body = JSON.stringify({
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenRequest',
      spec: { audiences: [req.audience], expirationSeconds: req.expirationSeconds, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: req.pod.name, uid: req.pod.uid } },
    });
    const out = (await this.#getJson(path, body)) as { status?: { token?: unknown; expirationTimestamp?: unknown } };
    const token = out.status?.token;
    if (typeof token !== 'string' || token === '') throw new KubeApiError(0, `POST ${path}: the answer has no status.token`);
    const at = typeof out.status?.expirationTimestamp === 'string' ? Date.parse(out.status.expirationTimestamp) : NaN;
    return { token, expiresAt: Number.isFinite(at) ? at : Date.now() + req.expirationSeconds * 1000 };
  }

  /** All pods that match, across namespaces, with the list's resourceVersion to watch from. */
  async listPods(opts: ListOptions = {}): Promise<{ items: KubePod[]; resourceVersion: string }> {
    const items: KubePod[] = [];
    let cont: string | undefined;
    for (;;) {
      const q = new URLSearchParams();
      if (opts.fieldSelector) q.set('fieldSelector', opts.fieldSelector);
      if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
      if (opts.limit) q.set('limit', String(opts.limit));
      if (cont) q.set('continue', cont);
      const page = (await this.#getJson(`/api/v1/pods?${q.toString()}`)) as { items?: KubePod[]; metadata?: { resourceVersion?: string; continue?: string } };
      if (!Array.isArray(page.items)) throw new KubeApiError(0, 'pod list: the answer has no items');
      items.push(...page.items);
      cont = page.metadata?.continue;
      if (!cont) {
        const rv = page.metadata?.resourceVersion;
        if (typeof rv !== 'string' || rv === '') throw new KubeApiError(0, 'pod list: the answer has no resourceVersion');
        return { items, resourceVersion: rv };
      }
    }
  }

  /**
   * Watches pods from `resourceVersion`, calling onEvent for each event.
   * Resolves when the server ends the stream (timeoutSeconds) or the signal
   * aborts; rejects with KUBE_EXPIRED on 410 (status or ERROR event: list
   * again), with a KubeApiError carrying the status (and Retry-After) for
   * any other error status or ERROR event, or with status 0 when the
   * connection fails, resets or stalls (resume from the last resourceVersion).
   */
  async watchPods(opts: WatchOptions, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    const token = await this.#auth();
    try {
      await this.#watch(token, opts, onEvent, signal);
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 401) this.access.exec?.invalidate();
      throw err;
    }
  }

  #watch(token: string | undefined, opts: WatchOptions, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    const q = new URLSearchParams({ watch: '1', resourceVersion: opts.resourceVersion, timeoutSeconds: String(opts.timeoutSeconds ?? 300) });
    if (opts.allowWatchBookmarks) q.set('allowWatchBookmarks', 'true');
    if (opts.fieldSelector) q.set('fieldSelector', opts.fieldSelector);
    if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
    const stallMs = opts.stallMs ?? DEFAULT_WATCH_STALL_MS;
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return resolve();
      let settled = false;
      let stall: NodeJS.Timeout | undefined;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(stall);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const fail = (err: Error): void => {
        req.destroy();
        finish(err);
      };
      // Armed from the request on, re-armed by each complete event: bytes alone
      // (a slow trickle) do not count as progress.
      const armStall = (): void => {
        clearTimeout(stall);
        stall = setTimeout(() => fail(new KubeApiError(0, `watch pods: no event or bookmark for ${stallMs} ms (stalled); restarting`, { stalled: true })), stallMs);
      };
      const req = this.#request(`/api/v1/pods?${q.toString()}`, token, (res) => {
        if (res.statusCode !== 200) {
          readBody(res, MAX_BODY_BYTES).then(
            (body) => finish(new KubeApiError(res.statusCode ?? 0, `watch pods: HTTP ${res.statusCode}: ${statusMessage(body)}`, { retryAfterMs: retryAfterMs(headerOf(res, 'retry-after'), parseStatus(body)) })),
            (err: Error) => finish(new KubeApiError(res.statusCode ?? 0, `watch pods: HTTP ${res.statusCode}`, { cause: err })),
          );
          return;
        }
        res.setEncoding('utf8');
        let buf = '';
        res.on('data', (chunk: string) => {
          buf += chunk;
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (line === '' || settled) continue;
            armStall();
            let ev: { type?: string; object?: unknown };
            try {
              ev = JSON.parse(line) as typeof ev;
            } catch {
              return fail(new KubeApiError(0, `watch pods: not a JSON event: ${line.slice(0, 120)}`));
            }
            if (ev.type === 'ERROR') {
              const st = (typeof ev.object === 'object' && ev.object !== null ? ev.object : {}) as StatusObject;
              // A Status without a code is no less an error: take it as a server error, never as expiry.
              const code = typeof st.code === 'number' && st.code > 0 ? st.code : 500;
              const text = `watch pods: ERROR event ${code} ${st.reason ?? ''}: ${st.message ?? ''}`.replace(/\s+/g, ' ');
              return fail(new KubeApiError(code, text, { retryAfterMs: retryAfterMs(undefined, st) }));
            }
            if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED' && ev.type !== 'BOOKMARK') continue;
            const obj = ev.object as KubePod | undefined;
            if (typeof obj?.metadata !== 'object') continue;
            try {
              onEvent({ type: ev.type, object: obj });
            } catch (err) {
              return fail(err as Error);
            }
          }
          if (buf.length > MAX_EVENT_BYTES && !settled) fail(new KubeApiError(0, `watch pods: an event larger than ${MAX_EVENT_BYTES} bytes`));
        });
        res.once('end', () => finish());
        res.once('error', (err) => finish(signal?.aborted ? undefined : new KubeApiError(0, `watch pods: ${err.message}`, { cause: err })));
        res.once('close', () => finish(signal?.aborted || res.complete ? undefined : new KubeApiError(0, 'watch pods: the connection closed mid-stream')));
      });
      armStall();
      req.once('error', (err) => finish(signal?.aborted ? undefined : new KubeApiError(0, `watch pods: ${err.message}`, { cause: err })));
      const onAbort = (): void => {
        req.destroy();
        finish();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.end();
    });
  }

  close(): void {
    this.#agent.destroy();
    for (const a of this.#retired.splice(0)) a.destroy();
  }

  /** The bearer token for the next request; with an exec plugin, its (cached) credential, and its client certificate in the pool. */
  async #auth(): Promise<string | undefined> {
    const exec = this.access.exec;
    if (exec === undefined) return this.access.token();
    const creds = await exec.get();
    if (creds.cert !== undefined && !(this.#agentCert?.equals(creds.cert) ?? false)) {
      // New connections present the new certificate; open ones (a watch) finish on the old.
      // Old pools with nothing in use are closed now, so rotations do not pile them up.
      for (const a of this.#retired.splice(0)) {
        if (Object.keys(a.sockets).length === 0) a.destroy();
        else this.#retired.push(a);
      }
      this.#retired.push(this.#agent);
      this.#agent = createKubeAgent(this.access, { cert: creds.cert, key: creds.key });
      this.#agentCert = creds.cert;
    }
    return creds.token ?? this.access.token();
  }

  #request(path: string, token: string | undefined, onResponse: (res: IncomingMessage) => void, body?: string): ReturnType<typeof httpRequest> {
    const url = new URL(this.access.server + path);
    const opts: RequestOptions = {
      method: body === undefined ? 'GET' : 'POST',
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? (this.#https ? 443 : 80) : Number(url.port),
      path: url.pathname + url.search,
      agent: this.#agent,
      headers: {
        accept: 'application/json',
        'user-agent': 'bpfmesh-node',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }),
      },
    };
    return (this.#https ? httpsRequest : httpRequest)(opts, onResponse);
  }

  async #getJson(path: string, body?: string): Promise<unknown> {
    const token = await this.#auth();
    try {
      return await this.#get(path, token, body);
    } catch (err) {
      // A credential from an exec plugin the server refuses: run the plugin again, once.
      if (!(err instanceof KubeApiError && err.status === 401 && this.access.exec)) throw err;
      this.access.exec.invalidate();
      return this.#get(path, await this.#auth(), body);
    }
  }

  /** A GET, or a POST of body (JSON) when given. */
  #get(path: string, token: string | undefined, payload?: string): Promise<unknown> {
    const what = `${payload === undefined ? 'GET' : 'POST'} ${path.split('?')[0]}`;
    return new Promise((resolve, reject) => {
      let done = false;
      const settle = (err: Error | undefined, value?: unknown): void => {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        if (err) reject(err);
        else resolve(value);
      };
      const req = this.#request(path, token, (res) => {
        readBody(res, MAX_BODY_BYTES).then(
          (body) => {
            const status = res.statusCode ?? 0;
            if (status !== 200 && status !== 201) return settle(new KubeApiError(status, `${what}: HTTP ${status}: ${statusMessage(body)}`, { retryAfterMs: retryAfterMs(headerOf(res, 'retry-after'), parseStatus(body)) }));
            try {
              settle(undefined, JSON.parse(body));
            } catch (err) {
              settle(new KubeApiError(0, `${what}: the answer is not JSON`, { cause: err }));
            }
          },
          (err: Error) => settle(new KubeApiError(0, `${what} on ${this.access.server}: ${err.message}`, { cause: err })),
        );
      }, payload);
      // A whole-request deadline, not an idle timer: a server trickling bytes never goes idle.
      const deadline = setTimeout(() => {
        req.destroy();
        settle(new KubeApiError(0, `${what} on ${this.access.server}: no complete answer in ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      req.once('error', (err) => settle(new KubeApiError(0, `${what} on ${this.access.server}: ${err.message}`, { cause: err })));
      req.end(payload);
    });
  }
}

function headerOf(res: IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function readBody(res: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    res.on('data', (d: Buffer) => {
      size += d.length;
      if (size > limit) {
        res.destroy();
        reject(new Error(`the answer is larger than ${limit} bytes`));
        return;
      }
      parts.push(d);
    });
    res.once('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    res.once('error', reject);
    res.once('close', () => {
      if (!res.complete) reject(new Error('the connection closed before the answer was complete'));
    });
  });
}
