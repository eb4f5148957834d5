// A fake Kubernetes API server for pods: a real HTTP server on 127.0.0.1
// that speaks the list/watch protocol (the one thing tests cannot run for
// real here). Supports GET of one pod, lists across all namespaces or one,
// fieldSelector (spec.nodeName, metadata.name, metadata.namespace, with = and
// !=), equality labelSelectors, chunked watch streams from a resourceVersion,
// bookmarks, filtered-watch semantics (a pod that stops matching is DELETED
// for that watcher), and compaction: watching from a resourceVersion older
// than the last compact() gets an ERROR event with a 410 Status, as etcd's
// compaction does. Every request needs the bearer token of the kubeconfig it writes.
//
// It fails as a real API server does, on demand (failWith): an HTTP error
// status with a Status body (and Retry-After, as priority and fairness
// sends with 429), a 200 watch that carries an ERROR event with any code
// (500, 410, 429 with details.retryAfterSeconds), a TCP reset after the
// first bytes, a stall (headers, then no byte ever), and a slow trickle
// (a valid answer, one byte at a time), a watch that ends cleanly at once.
// Every request is recorded with its
// time, so tests count request rates over a window.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KubePod } from '../../src/kube/client.js';

export interface FakePodInput {
  metadata: { name: string; namespace?: string; uid?: string; annotations?: Record<string, string>; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: KubePod['spec'];
  status?: KubePod['status'];
}

export interface FakeKubeOptions {
  /** How often open watches that asked for them get a BOOKMARK; default 1000 ms. */
  bookmarkIntervalMs?: number;
  token?: string;
}

export interface FakeKubeRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  status: number;
  /** Date.now() when it arrived. */
  at: number;
  /** The injected failure it got, if any. */
  fault: FakeKubeFault['kind'] | undefined;
}

export type FakeKubeFault =
  /** An HTTP error status with a Status body; retryAfter is sent as the Retry-After header. */
  | { kind: 'status'; status: number; retryAfter?: string }
  /** Watches: 200, then one ERROR event with this Status code, then the end of the stream. */
  | { kind: 'watch-error'; code: number; retryAfterSeconds?: number }
  /** 200 and a first line (a bookmark; a list gets half its body), then a TCP reset. */
  | { kind: 'reset' }
  /** Watches: 200, a bookmark, then a clean end of the stream long before timeoutSeconds (a server shutting down). */
  | { kind: 'early-end' }
  /** 200 and the headers, then nothing, the connection held open. */
  | { kind: 'stall' }
  /** The normal answer (a bookmark line for a watch), one byte every intervalMs. */
  | { kind: 'trickle'; intervalMs: number };

export interface FaultOptions {
  /** Which requests get it; default any. */
  on?: 'list' | 'watch' | 'get' | 'any';
  /** How many requests get it; default every one until heal(). */
  count?: number;
}

export interface FakeKube {
  url: string;
  kubeconfigPath: string;
  token: string;
  /** Creates (ADDED) or replaces (MODIFIED) a pod; returns the stored copy with uid and resourceVersion. */
  setPod(pod: FakePodInput): KubePod;
  /** Deletes a pod (DELETED); returns false when it did not exist. */
  deletePod(namespace: string, name: string): boolean;
  getStored(namespace: string, name: string): KubePod | undefined;
  /** Forgets every resourceVersion up to now: watches from them get ERROR 410. Open watches are closed. */
  compact(): void;
  /** Ends every open watch stream (a network drop); clients resume from their last resourceVersion. */
  dropWatches(): void;
  /** Answers the next n requests (lists, watches, gets) with this HTTP status. */
  failNext(n: number, status?: number): void;
  /** Injects a failure into the matching requests (replaces any earlier one). */
  failWith(fault: FakeKubeFault, opts?: FaultOptions): void;
  /** Stops injecting failures (connections already stalled stay so until the client gives up). */
  heal(): void;
  /**
   * Requests that arrived after position `from` of `requests` (take
   * `requests.length` as the mark: time stamps have 1 ms steps, so a request
   * made just before a Date.now() mark can carry the same time), optionally only these.
   */
  countRequests(from: number, what?: 'list' | 'watch' | 'get'): number;
  readonly requests: FakeKubeRequest[];
  /** TokenRequests answered: the token is `tr.<namespace>.<serviceaccount>.<pod uid>`. */
  readonly tokenRequests: Array<{ namespace: string; serviceAccount: string; audiences: string[]; pod: string; token: string }>;
  readonly openWatches: number;
  readonly resourceVersion: number;
  close(): Promise<void>;
}

interface StoredEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  pod: KubePod;
  prev: KubePod | undefined;
}

interface Watcher {
  res: ServerResponse;
  match: (p: KubePod) => boolean;
  bookmarks: boolean;
  timer: NodeJS.Timeout | undefined;
  deadline: NodeJS.Timeout | undefined;
}

type Selector = (p: KubePod) => boolean;

function fieldValue(p: KubePod, field: string): string | undefined {
  switch (field) {
    case 'spec.nodeName':
      return p.spec?.nodeName ?? '';
    case 'metadata.name':
      return p.metadata.name;
    case 'metadata.namespace':
      return p.metadata.namespace;
    case 'status.phase':
      return p.status?.phase ?? '';
    default:
      return undefined;
  }
}

function parseFieldSelector(text: string | undefined): Selector | string {
  const tests: Selector[] = [];
  for (const term of (text ?? '').split(',').filter(Boolean)) {
    const m = /^([a-zA-Z.]+)(==|!=|=)(.*)$/.exec(term);
    if (!m) return `field selector "${term}" is not field=value`;
    const [, field, op, value] = m as unknown as [string, string, string, string];
    if (fieldValue({ metadata: { name: '', namespace: '', uid: '' } }, field) === undefined) return `field label not supported: ${field}`;
    tests.push((p) => (fieldValue(p, field) === value) === (op !== '!='));
  }
  return (p) => tests.every((t) => t(p));
}

function parseLabelSelector(text: string | undefined): Selector | string {
  const tests: Selector[] = [];
  for (const term of (text ?? '').split(',').filter(Boolean)) {
    const m = /^(!?)([A-Za-z0-9./_-]+)(?:(==|!=|=)(.*))?$/.exec(term.trim());
    if (!m) return `label selector "${term}" is not supported by the fake`;
    const [, not, key, op, value] = m as unknown as [string, string, string, string | undefined, string | undefined];
    tests.push((p) => {
      const v = p.metadata.labels?.[key];
      if (op === undefined) return (v !== undefined) !== (not === '!');
      return (v === value) === (op !== '!=');
    });
  }
  return (p) => tests.every((t) => t(p));
}

const clone = (p: KubePod): KubePod => JSON.parse(JSON.stringify(p)) as KubePod;

const REASONS: Record<number, string> = { 410: 'Expired', 429: 'TooManyRequests', 500: 'InternalError', 503: 'ServiceUnavailable', 504: 'Timeout' };

function statusObject(code: number, message: string, retryAfterSeconds?: number): Record<string, unknown> {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason: REASONS[code] ?? 'InternalError',
    code,
    ...(retryAfterSeconds !== undefined ? { details: { retryAfterSeconds } } : {}),
  };
}

function status(res: ServerResponse, code: number, reason: string, message: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/** Writes text one byte per interval until done or the client goes. */
function trickle(res: ServerResponse, text: string, intervalMs: number): void {
  let i = 0;
  const t = setInterval(() => {
    if (res.destroyed || i >= text.length) {
      clearInterval(t);
      if (!res.destroyed) res.end();
      return;
    }
    res.write(text[i++]!);
  }, intervalMs);
  res.once('close', () => clearInterval(t));
}

function injectFault(
  f: FakeKubeFault,
  kind: 'list' | 'watch' | 'get',
  req: IncomingMessage,
  res: ServerResponse,
  reply: (code: number, reason: string, message: string, headers?: Record<string, string>) => void,
): void {
  const bookmark = JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: '1' } } }) + '\n';
  const okList = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: '1' }, items: [] });
  switch (f.kind) {
    case 'status':
      return reply(f.status, REASONS[f.status] ?? 'InternalError', `injected failure ${f.status}`, f.retryAfter !== undefined ? { 'retry-after': f.retryAfter } : {});
    case 'watch-error':
      if (kind !== 'watch') return reply(f.code, REASONS[f.code] ?? 'InternalError', `injected failure ${f.code}`);
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.end(JSON.stringify({ type: 'ERROR', object: statusObject(f.code, `injected ERROR event ${f.code}`, f.retryAfterSeconds) }) + '\n');
      return;
    case 'reset':
      if (kind === 'watch') {
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        res.write(bookmark);
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(okList) });
        res.write(okList.slice(0, okList.length >> 1));
      }
      // Let the first bytes go out, then RST (not FIN): what a dying peer or middlebox does.
      setTimeout(() => req.socket.resetAndDestroy(), 20);
      return;
    case 'early-end':
      if (kind !== 'watch') return reply(503, 'ServiceUnavailable', 'injected failure 503');
      res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
      res.end(bookmark);
      return;
    case 'stall':
      res.writeHead(200, { 'content-type': 'application/json', ...(kind === 'watch' ? { 'transfer-encoding': 'chunked' } : {}) });
      res.flushHeaders();
      return;
    case 'trickle':
      if (kind === 'watch') {
        res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
        return trickle(res, bookmark, f.intervalMs);
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(okList) });
      return trickle(res, okList, f.intervalMs);
  }
}

export async function startFakeKube(opts: FakeKubeOptions = {}): Promise<FakeKube> {
  const token = opts.token ?? `fake-${randomUUID()}`;
  const bookmarkMs = opts.bookmarkIntervalMs ?? 1000;
  const pods = new Map<string, KubePod>();
  const events: StoredEvent[] = [];
  const watchers = new Set<Watcher>();
  const requests: FakeKubeRequest[] = [];
  let rv = 1000;
  let compactedBelow = 0; // watching from an rv < this is 410
  let fault: { fault: FakeKubeFault; on: NonNullable<FaultOptions['on']>; left: number } | undefined;
  const kindOf = (path: string, watch: boolean): 'list' | 'watch' | 'get' => (watch ? 'watch' : /\/pods\/[^/]+$/.test(path) ? 'get' : 'list');

  const key = (ns: string, name: string): string => `${ns}/${name}`;

  function send(w: Watcher, type: string, object: unknown): void {
    w.res.write(JSON.stringify({ type, object }) + '\n');
  }

  function deliver(ev: StoredEvent, w: Watcher): void {
    const now = w.match(ev.pod);
    const before = ev.prev !== undefined && w.match(ev.prev);
    if (ev.type === 'DELETED') {
      if (before || now) send(w, 'DELETED', ev.pod);
    } else if (now && !before) send(w, 'ADDED', ev.pod);
    else if (now && before) send(w, 'MODIFIED', ev.pod);
    else if (!now && before) send(w, 'DELETED', ev.pod); // left the selector
  }

  function record(type: StoredEvent['type'], pod: KubePod, prev: KubePod | undefined): void {
    const ev: StoredEvent = { rv, type, pod: clone(pod), prev: prev && clone(prev) };
    events.push(ev);
    for (const w of watchers) deliver(ev, w);
  }

  function endWatcher(w: Watcher): void {
    clearInterval(w.timer);
    clearTimeout(w.deadline);
    watchers.delete(w);
    w.res.end();
  }

  function handleWatch(req: IncomingMessage, res: ServerResponse, q: URLSearchParams, match: Selector): void {
    const from = Number(q.get('resourceVersion') ?? '0');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    const w: Watcher = { res, match, bookmarks: q.get('allowWatchBookmarks') === 'true', timer: undefined, deadline: undefined };
    if (q.get('resourceVersion') && (Number.isNaN(from) || from < compactedBelow)) {
      // What the API server sends when etcd has compacted the revision away.
      send(w, 'ERROR', { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${compactedBelow})`, reason: 'Expired', code: 410 });
      res.end();
      return;
    }
    watchers.add(w);
    if (q.get('resourceVersion') === null || from === 0) {
      // No resourceVersion: synthetic ADDED for the current state, then changes.
      for (const p of pods.values()) if (match(p)) send(w, 'ADDED', p);
    } else {
      for (const ev of events) if (ev.rv > from) deliver(ev, w);
    }
    if (w.bookmarks) {
      w.timer = setInterval(() => send(w, 'BOOKMARK', { kind: 'Pod', apiVersion: 'v1', metadata: { resourceVersion: String(rv) } }), bookmarkMs);
    }
    const timeout = Number(q.get('timeoutSeconds') ?? '0');
    if (timeout > 0) w.deadline = setTimeout(() => endWatcher(w), timeout * 1000);
    req.once('close', () => {
      clearInterval(w.timer);
      clearTimeout(w.deadline);
      watchers.delete(w);
    });
  }

  const tokenRequests: FakeKube['tokenRequests'] = [];
  /** As the API server: the bound pod must exist with that uid and run as that service account. */
  function answerTokenRequest(req: IncomingMessage, namespace: string, sa: string, res: ServerResponse, reply: (code: number, reason: string, message: string) => void): void {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.once('end', () => {
      let spec: { audiences?: unknown; expirationSeconds?: unknown; boundObjectRef?: { kind?: unknown; name?: unknown; uid?: unknown } } | undefined;
      try {
        spec = (JSON.parse(body) as { kind?: string; spec?: typeof spec }).spec;
      } catch {
        return reply(400, 'BadRequest', 'the body is not JSON');
      }
      const audiences = Array.isArray(spec?.audiences) ? (spec.audiences as unknown[]).filter((a): a is string => typeof a === 'string') : [];
      const ref = spec?.boundObjectRef;
      if (ref?.kind !== 'Pod' || typeof ref.name !== 'string') return reply(400, 'BadRequest', 'boundObjectRef: a Pod is required here');
      const pod = pods.get(key(namespace, ref.name));
      if (!pod || pod.metadata.uid !== ref.uid) return reply(404, 'NotFound', `pods "${ref.name}" not found (or another uid)`);
      const podSa = typeof pod.spec?.['serviceAccountName'] === 'string' ? pod.spec['serviceAccountName'] : 'default';
      if (podSa !== sa) return reply(400, 'BadRequest', `pod "${ref.name}" runs as service account "${podSa}", not "${sa}"`);
      const token = `tr.${namespace}.${sa}.${pod.metadata.uid}`;
      tokenRequests.push({ namespace, serviceAccount: sa, audiences, pod: ref.name, token });
      const seconds = typeof spec?.expirationSeconds === 'number' ? spec.expirationSeconds : 3600;
      const out = JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec, status: { token, expirationTimestamp: new Date(Date.now() + seconds * 1000).toISOString() } });
      res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
    });
  }

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake');
    const q = url.searchParams;
    const watch = q.get('watch') === '1' || q.get('watch') === 'true';
    const entry: FakeKubeRequest = { method: req.method ?? '', path: url.pathname, query: Object.fromEntries(q), watch, status: 200, at: Date.now(), fault: undefined };
    requests.push(entry);
    const reply = (code: number, reason: string, message: string, headers?: Record<string, string>): void => {
      entry.status = code;
      status(res, code, reason, message, headers);
    };
    if (req.headers.authorization !== `Bearer ${token}`) return reply(401, 'Unauthorized', 'Unauthorized');
    const kind = kindOf(url.pathname, watch);
    if (fault !== undefined && fault.left > 0 && (fault.on === 'any' || fault.on === kind)) {
      const f = fault.fault;
      if (--fault.left === 0) fault = undefined;
      entry.fault = f.kind;
      return injectFault(f, kind, req, res, reply);
    }
    const tokenFor = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)\/token$/.exec(url.pathname);
    if (tokenFor) {
      if (req.method !== 'POST') return reply(405, 'MethodNotAllowed', 'only POST');
      return void answerTokenRequest(req, decodeURIComponent(tokenFor[1]!), decodeURIComponent(tokenFor[2]!), res, reply);
    }
    if (req.method !== 'GET') return reply(405, 'MethodNotAllowed', 'only GET');
    const one = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(url.pathname);
    if (one) {
      const pod = pods.get(key(decodeURIComponent(one[1]!), decodeURIComponent(one[2]!)));
      if (!pod) return reply(404, 'NotFound', `pods "${decodeURIComponent(one[2]!)}" not found`);
      const body = JSON.stringify(pod);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      return void res.end(body);
    }
    const many = /^\/api\/v1(?:\/namespaces\/([^/]+))?\/pods$/.exec(url.pathname);
    if (!many) return reply(404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const field = parseFieldSelector(q.get('fieldSelector') ?? undefined);
    const label = parseLabelSelector(q.get('labelSelector') ?? undefined);
    if (typeof field === 'string') return reply(400, 'BadRequest', field);
    if (typeof label === 'string') return reply(400, 'BadRequest', label);
    const ns = many[1] === undefined ? undefined : decodeURIComponent(many[1]);
    const match: Selector = (p) => (ns === undefined || p.metadata.namespace === ns) && field(p) && label(p);
    if (watch) return handleWatch(req, res, q, match);
    const items = [...pods.values()].filter(match);
    const body = JSON.stringify({ kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(rv) }, items });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-fake-kube-'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfigPath,
    [
      'apiVersion: v1',
      'kind: Config',
      'current-context: fake',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${url}`,
      'contexts:',
      '- name: fake',
      '  context:',
      '    cluster: fake',
      '    user: fake',
      'users:',
      '- name: fake',
      '  user:',
      `    token: ${token}`,
      '',
    ].join('\n'),
  );

  return {
    url,
    kubeconfigPath,
    token,
    tokenRequests,
    setPod(input) {
      const namespace = input.metadata.namespace ?? 'default';
      const k = key(namespace, input.metadata.name);
      const prev = pods.get(k);
      rv++;
      const pod: KubePod = clone({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          ...input.metadata,
          namespace,
          uid: input.metadata.uid ?? prev?.metadata.uid ?? randomUUID(),
          resourceVersion: String(rv),
          creationTimestamp: prev?.metadata.creationTimestamp ?? new Date().toISOString(),
        },
        spec: input.spec ?? {},
        status: input.status ?? { phase: 'Running' },
      });
      pods.set(k, pod);
      record(prev ? 'MODIFIED' : 'ADDED', pod, prev);
      return clone(pod);
    },
    deletePod(namespace, name) {
      const k = key(namespace, name);
      const prev = pods.get(k);
      if (!prev) return false;
      pods.delete(k);
      rv++;
      const gone = clone(prev);
      gone.metadata.resourceVersion = String(rv);
      record('DELETED', gone, prev);
      return true;
    },
    getStored: (namespace, name) => {
      const p = pods.get(key(namespace, name));
      return p && clone(p);
    },
    compact() {
      rv++;
      compactedBelow = rv;
      events.length = 0;
      for (const w of [...watchers]) endWatcher(w);
    },
    dropWatches() {
      for (const w of [...watchers]) {
        clearInterval(w.timer);
        clearTimeout(w.deadline);
        watchers.delete(w);
        w.res.destroy();
      }
    },
    failNext(n, code = 500) {
      fault = { fault: { kind: 'status', status: code }, on: 'any', left: n };
    },
    failWith(f, o = {}) {
      fault = { fault: f, on: o.on ?? 'any', left: o.count ?? Infinity };
    },
    heal() {
      fault = undefined;
    },
    countRequests(from, what) {
      return requests.slice(from).filter((r) => what === undefined || kindOf(r.path, r.watch) === what).length;
    },
    requests,
    get openWatches() {
      return watchers.size;
    },
    get resourceVersion() {
      return rv;
    },
    async close() {
      for (const w of [...watchers]) endWatcher(w);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
