// What route matching reads of a request, from an HTTP/1 head or HTTP/2 headers.
import type { IncomingHttpHeaders } from 'node:http2';
import type { RequestInfo } from './authorize.js';

/** What route matching reads of an HTTP/1 request head (the proxy's parsed RequestHead has these). */
export interface H1RequestHead {
  method: string;
  /** The request target as received (origin-form or absolute-form). */
  target: string;
  /** The Host field, if any. */
  host: string | undefined;
  /** Flat [name, value, name, value, ...]. */
  headers: readonly string[];
}

/** Host without port, lower case, from an authority ("web:8080", "[::1]:80"). */
export function hostOf(authority: string | undefined): string {
  if (authority === undefined) return '';
  const a = authority.trim().toLowerCase();
  if (a.startsWith('[')) return a.slice(1, a.indexOf(']') > 0 ? a.indexOf(']') : undefined);
  const colon = a.lastIndexOf(':');
  return colon < 0 ? a : a.slice(0, colon);
}

/** Path and query of a request target (origin-form, or absolute-form "http://h/p?q"). */
export function splitTarget(target: string): { path: string; query: string; authority: string | undefined } {
  let t = target;
  let authority: string | undefined;
  const abs = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(t);
  if (abs !== null) {
    authority = abs[1];
    t = t.slice(abs[0].length) || '/';
  }
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  const q = t.indexOf('?');
  return q < 0 ? { path: t, query: '', authority } : { path: t.slice(0, q), query: t.slice(q + 1), authority };
}

/**
 * An HTTP/1 request as route matching reads it. Lazy: a server without
 * routes (the default policies) reads none of it, and the target is split
 * only when a route asks for the path, query or host.
 */
class H1RequestInfo implements RequestInfo {
  #parts: { path: string; query: string; host: string } | undefined;
  constructor(readonly head: H1RequestHead) {}
  get method(): string {
    return this.head.method;
  }
  get path(): string {
    return this.#split().path;
  }
  get query(): string {
    return this.#split().query;
  }
  get host(): string {
    return this.#split().host;
  }
  header(name: string): string | undefined {
    const h = this.head.headers;
    for (let i = 0; i + 1 < h.length; i += 2) if (h[i]!.toLowerCase() === name) return h[i + 1];
    return undefined;
  }
  #split(): { path: string; query: string; host: string } {
    if (this.#parts === undefined) {
      const { path, query, authority } = splitTarget(this.head.target);
      this.#parts = { path, query, host: hostOf(authority ?? this.head.host) };
    }
    return this.#parts;
  }
}

export function requestInfoOfH1(head: H1RequestHead): RequestInfo {
  return new H1RequestInfo(head);
}

export function requestInfoOfH2(headers: IncomingHttpHeaders): RequestInfo {
  const { path, query } = splitTarget(String(headers[':path'] ?? '/'));
  return {
    method: String(headers[':method'] ?? 'GET'),
    path,
    query,
    host: hostOf(headers[':authority'] ?? headers.host),
    header(name: string): string | undefined {
      const v = headers[name];
      return Array.isArray(v) ? v.join(',') : v;
    },
  };
}
