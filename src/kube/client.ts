// A small Kubernetes API client for pods over node:https (node:http for a
// plain-HTTP server in tests): get, list and watch. Watch streams are
// newline-delimited JSON events on a chunked response.
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { KubeAccess } from './config.js';

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
}

export interface KubeClientOptions {
  /** Per-request timeout for get and list; default 30 s. */
  requestTimeoutMs?: number;
}

/** An error status from the API server (or no answer at all: status 0). */
export class KubeApiError extends BpfmeshError {
  readonly status: number;
  constructor(status: number, message: string, cause?: unknown) {
    super(status === 410 ? ErrorCodes.KUBE_EXPIRED : ErrorCodes.KUBE_API, message, cause === undefined ? {} : { cause });
    this.name = 'KubeApiError';
    this.status = status;
  }
}

/** The resourceVersion asked for is gone (410, or an ERROR event): list again. */
export const isExpired = (err: unknown): boolean => err instanceof BpfmeshError && err.code === ErrorCodes.KUBE_EXPIRED;

function statusMessage(body: string): string {
  try {
    const s = JSON.parse(body) as { message?: string; reason?: string };
    if (typeof s.message === 'string') return s.reason ? `${s.reason}: ${s.message}` : s.message;
  } catch {
    /* not a Status object */
  }
  return body.slice(0, 200);
}

export class KubeClient {
  readonly access: KubeAccess;
  readonly #agent: HttpAgent;
  readonly #https: boolean;
  readonly #timeoutMs: number;

  constructor(access: KubeAccess, opts: KubeClientOptions = {}) {
    this.access = access;
    this.#https = access.server.startsWith('https:');
    this.#timeoutMs = opts.requestTimeoutMs ?? 30_000;
    this.#agent = this.#https
      ? new HttpsAgent({
          keepAlive: true,
          ...(access.ca ? { ca: access.ca } : {}),
          ...(access.cert ? { cert: access.cert } : {}),
          ...(access.key ? { key: access.key } : {}),
          rejectUnauthorized: !access.insecureSkipTlsVerify,
        })
      : new HttpAgent({ keepAlive: true });
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
   * aborts; rejects with KUBE_EXPIRED on 410 or an ERROR event (list again),
   * or another error when the connection fails (resume from the last seen
   * resourceVersion).
   */
  watchPods(opts: WatchOptions, onEvent: (ev: WatchEvent) => void, signal?: AbortSignal): Promise<void> {
    const q = new URLSearchParams({ watch: '1', resourceVersion: opts.resourceVersion, timeoutSeconds: String(opts.timeoutSeconds ?? 300) });
    if (opts.allowWatchBookmarks) q.set('allowWatchBookmarks', 'true');
    if (opts.fieldSelector) q.set('fieldSelector', opts.fieldSelector);
    if (opts.labelSelector) q.set('labelSelector', opts.labelSelector);
    // No bytes for this long (not even a bookmark) = a dead connection.
    const idleMs = ((opts.timeoutSeconds ?? 300) + 30) * 1000;
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return resolve();
      let settled = false;
      const finish = (err?: Error): void => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const req = this.#request(`/api/v1/pods?${q.toString()}`, (res) => {
        if (res.statusCode !== 200) {
          readBody(res).then(
            (body) => finish(new KubeApiError(res.statusCode ?? 0, `watch pods: HTTP ${res.statusCode}: ${statusMessage(body)}`)),
            (err: Error) => finish(new KubeApiError(res.statusCode ?? 0, `watch pods: HTTP ${res.statusCode}`, err)),
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
            let ev: { type?: string; object?: unknown };
            try {
              ev = JSON.parse(line) as typeof ev;
            } catch {
              req.destroy();
              return finish(new KubeApiError(0, `watch pods: not a JSON event: ${line.slice(0, 120)}`));
            }
            if (ev.type === 'ERROR') {
              req.destroy();
              const status = (ev.object ?? {}) as { code?: number; reason?: string; message?: string };
              return finish(new KubeApiError(410, `watch pods: ERROR event ${status.code ?? ''} ${status.reason ?? ''}: ${status.message ?? ''}`.replace(/\s+/g, ' ')));
            }
            if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED' && ev.type !== 'BOOKMARK') continue;
            const obj = ev.object as KubePod | undefined;
            if (typeof obj?.metadata !== 'object') continue;
            try {
              onEvent({ type: ev.type, object: obj });
            } catch (err) {
              req.destroy();
              return finish(err as Error);
            }
          }
        });
        res.once('end', () => finish());
        res.once('error', (err) => finish(signal?.aborted ? undefined : new KubeApiError(0, `watch pods: ${err.message}`, err)));
        res.once('close', () => finish(signal?.aborted || res.complete ? undefined : new KubeApiError(0, 'watch pods: the connection closed mid-stream')));
      });
      req.setTimeout(idleMs, () => req.destroy(new Error(`no data for ${idleMs} ms`)));
      req.once('error', (err) => finish(signal?.aborted ? undefined : new KubeApiError(0, `watch pods: ${err.message}`, err)));
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
  }

  #request(path: string, onResponse: (res: IncomingMessage) => void): ReturnType<typeof httpRequest> {
    const url = new URL(this.access.server + path);
    const token = this.access.token();
    const opts: RequestOptions = {
      method: 'GET',
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port === '' ? (this.#https ? 443 : 80) : Number(url.port),
      path: url.pathname + url.search,
      agent: this.#agent,
      headers: { accept: 'application/json', 'user-agent': 'bpfmesh-node', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    };
    return (this.#https ? httpsRequest : httpRequest)(opts, onResponse);
  }

  #getJson(path: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const req = this.#request(path, (res) => {
        readBody(res).then((body) => {
          const status = res.statusCode ?? 0;
          if (status !== 200) return reject(new KubeApiError(status, `GET ${path.split('?')[0]}: HTTP ${status}: ${statusMessage(body)}`));
          try {
            resolve(JSON.parse(body));
          } catch (err) {
            reject(new KubeApiError(0, `GET ${path.split('?')[0]}: the answer is not JSON`, err));
          }
        }, reject);
      });
      req.setTimeout(this.#timeoutMs, () => req.destroy(new Error(`no answer in ${this.#timeoutMs} ms`)));
      req.once('error', (err) => reject(new KubeApiError(0, `GET ${path.split('?')[0]} on ${this.access.server}: ${err.message}`, err)));
      req.end();
    });
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    res.on('data', (d: Buffer) => parts.push(d));
    res.once('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    res.once('error', reject);
  });
}
