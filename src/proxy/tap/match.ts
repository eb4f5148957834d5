// Linkerd's tap match expressions (ObserveRequest.Match) compiled into a
// predicate over one request, with linkerd2-proxy's rules: a missing or
// empty part is refused (INVALID_ARGUMENT), `all` of nothing matches
// everything, `any` of nothing matches nothing, a port range with one bound
// 0 is that one port, a netmask matches only its own address family, a
// path is compared without its query.
import { BpfmeshError, ErrorCodes } from '../../errors.js';
import type { TapMatchMsg } from '../../control/protos.js';
import { stripMapped } from '../../util/addr.js';
import { formatIp, parseCidr, parseIp, type Cidr, type IpAddress } from '../../util/ip.js';
import type { Addr } from '../types.js';

/** What a match looks at in a request. */
export interface TapRequestView {
  source: Addr | undefined;
  destination: Addr;
  /** The endpoint's labels from the control plane (outbound), without the dst_ prefix. */
  destinationLabels: Readonly<Record<string, string>> | undefined;
  /** "http" or "https" (HTTP/2 :scheme; HTTP/1 is "http"). */
  scheme: string;
  method: string;
  authority: string;
  /** Path without the query. */
  path: string;
}

export type TapPredicate = (r: TapRequestView) => boolean;

export const TAP_INVALID = ErrorCodes.TAP_INVALID;

const invalid = (what: string): BpfmeshError => new BpfmeshError(TAP_INVALID, `invalid tap match: ${what}`);

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'HEAD', 'TRACE'] as const;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,15}$/;

/** Compiles a match; throws BPFMESH_E_TAP_INVALID (the server answers INVALID_ARGUMENT) for a missing or bad part. */
export function compileMatch(m: TapMatchMsg | null | undefined, depth = 0): TapPredicate {
  if (m === null || m === undefined || m.match === undefined) throw invalid('missing required field');
  // The request is a peer's: bound the recursion a nested `not`/`all` can cause.
  if (depth > 32) throw invalid('nested deeper than 32');
  switch (m.match) {
    case 'all': {
      const ps = (m.all?.matches ?? []).filter((x) => x.match !== undefined).map((x) => compileMatch(x, depth + 1));
      return (r) => ps.every((p) => p(r));
    }
    case 'any': {
      const ps = (m.any?.matches ?? []).filter((x) => x.match !== undefined).map((x) => compileMatch(x, depth + 1));
      return (r) => ps.some((p) => p(r));
    }
    case 'not': {
      const p = compileMatch(m.not, depth + 1);
      return (r) => !p(r);
    }
    case 'source': {
      const p = compileTcp(m.source);
      return (r) => r.source !== undefined && p(r.source);
    }
    case 'destination': {
      const p = compileTcp(m.destination);
      return (r) => p(r.destination);
    }
    case 'destination_label': {
      const l = m.destination_label;
      if (l === null || l === undefined || l.key === '' || l.value === '') throw invalid('missing required field');
      return (r) => r.destinationLabels?.[l.key] === l.value;
    }
    case 'route_label': {
      const l = m.route_label;
      if (l === null || l === undefined || l.key === '' || l.value === '') throw invalid('missing required field');
      return () => false; // bpfmesh has no route labels (no ServiceProfile routes)
    }
    case 'http':
      return compileHttp(m.http);
  }
}

function compileTcp(t: TapMatchMsg['source']): (a: Addr) => boolean {
  if (t === null || t === undefined || t.match === undefined) throw invalid('missing required field');
  if (t.match === 'ports') {
    const min = t.ports?.min || t.ports?.max || 0;
    const max = t.ports?.max || t.ports?.min || 0;
    if (min === 0 || max === 0) throw invalid('missing required field');
    if (min > 65535 || max > 65535) throw invalid('invalid port number');
    return (a) => a.port >= min && a.port <= max;
  }
  const nm = t.netmask;
  const mask = nm?.mask ?? 0;
  if (mask === 0) throw invalid('missing required field');
  const ip = nm?.ip;
  let cidr: Cidr | null = null;
  if (ip?.ipv4 !== undefined) {
    if (mask > 32) throw invalid('invalid network address');
    const b = Buffer.alloc(4);
    b.writeUInt32BE(ip.ipv4 >>> 0, 0);
    cidr = parseCidr(`${formatIp(b, 4)}/${mask}`);
  } else if (ip?.ipv6 !== undefined && ip.ipv6 !== null) {
    if (mask > 128) throw invalid('invalid network address');
    const b = Buffer.alloc(16);
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.first))), 0);
    b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(String(ip.ipv6.last))), 8);
    cidr = parseCidr(`${formatIp(b, 6)}/${mask}`);
  } else {
    throw invalid('missing required field');
  }
  if (cidr === null) throw invalid('invalid network address');
  const net = cidr;
  return (a) => {
    const parsed = parseIp(stripMapped(a.host));
    return parsed !== null && parsed.family === net.family && cidrContains(net, parsed);
  };
}

function compileHttp(h: TapMatchMsg['http']): TapPredicate {
  if (h === null || h === undefined || h.match === undefined) throw invalid('missing required field');
  switch (h.match) {
    case 'scheme': {
      const s = h.scheme;
      if (s === null || s === undefined || s.type === undefined) throw invalid('missing required field');
      const want = s.type === 'registered' ? String(s.registered).toLowerCase() : (s.unregistered ?? '').toLowerCase();
      if (want !== 'http' && want !== 'https' && !/^[a-z][a-z0-9+.-]*$/.test(want)) throw invalid('invalid request scheme');
      return (r) => r.scheme === want;
    }
    case 'method': {
      const m = h.method;
      if (m === null || m === undefined || m.type === undefined) throw invalid('missing required field');
      const want = m.type === 'registered' ? String(m.registered) : (m.unregistered ?? '');
      if (m.type === 'registered' ? !(METHODS as readonly string[]).includes(want) : !TOKEN.test(want)) throw invalid('invalid http method');
      return (r) => r.method === want;
    }
    case 'authority': {
      const s = stringMatch(h.authority);
      return (r) => r.authority !== '' && s(r.authority);
    }
    case 'path': {
      const s = stringMatch(h.path);
      return (r) => s(r.path);
    }
  }
}

function stringMatch(s: NonNullable<TapMatchMsg['http']>['path']): (v: string) => boolean {
  if (s === null || s === undefined || s.match === undefined) throw invalid('missing required field');
  if (s.match === 'exact') {
    const e = s.exact ?? '';
    return (v) => v === e;
  }
  const p = s.prefix ?? '';
  return (v) => v.startsWith(p);
}

/** Whether the first `prefix` bits of `ip` are the network's. */
function cidrContains(net: Cidr, ip: IpAddress): boolean {
  for (let bit = 0; bit < net.prefix; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((net.bytes[bit >> 3]! & mask) !== (ip.bytes[bit >> 3]! & mask)) return false;
  }
  return true;
}
