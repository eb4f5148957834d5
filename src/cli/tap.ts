// bpfmesh tap: watch a pod's requests live through its proxy's tap server
// (Linkerd's Tap API on the control port), one line per event as
// `linkerd viz tap` prints them, or one JSON object per line.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { DEFAULT_BPFFS } from '../config/paths.js';
import { parseHostPort } from '../config/proxy-env.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { encodeTcpAddress, type ObserveRequestIn, type TapMatchIn } from '../control/protos.js';
import { formatTapEvent, tapEventJson } from '../proxy/tap/format.js';
import { observe } from '../proxy/tap/client.js';
import type { Addr } from '../util/addr.js';
import { parseCidr, parseIp } from '../util/ip.js';

export const usage = `bpfmesh tap (--pod NAME [--namespace NS] | --addr HOST:PORT) [match] [identity] [--max N] [--json]   watch requests live
  Where:    --pod NAME          an intercepted pod on this node (the name bpfmesh inspect shows; needs root): its own IP, its control port
            --pod NAME --namespace NS [--kubeconfig PATH] [--control-port N]   a pod through the Kubernetes API: status.podIP:4190, identity from its service account
            --addr HOST:PORT    the proxy's control port directly (LINKERD2_PROXY_CONTROL_LISTEN_ADDR, 4190)
            --server-id NAME    the proxy's identity to expect (default: from the pod's service account with --namespace; else only the chain is checked)
  Match:    --to ADDR  --from ADDR   IP, CIDR, IP:PORT or :PORT of the destination / source
            --path PREFIX  --method M  --authority A (exact)
  Identity: --cert FILE --key FILE --trust-anchors FILE   the tap identity's certificate (LINKERD2_PROXY_TAP_SVC_NAME), key and the mesh's trust anchors (PEM)
            --control-plane-state DIR [--identity NAME]   lab: a leaf for NAME (default ${'linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local'}) from bpfmesh control-plane's issuer
  --max N   requests to report (default 100); the stream ends when they have all ended
  --json    one JSON object per event and line (linkerd viz tap -o json's fields)    --trust-domain D   for --namespace (default cluster.local)
`;

const DEFAULT_TAP_IDENTITY = 'linkerd-tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local';
const OPTIONS = {
  pod: { type: 'string' },
  namespace: { type: 'string' },
  kubeconfig: { type: 'string' },
  'control-port': { type: 'string' },
  bpffs: { type: 'string' },
  addr: { type: 'string' },
  'server-id': { type: 'string' },
  to: { type: 'string' },
  from: { type: 'string' },
  path: { type: 'string' },
  method: { type: 'string' },
  authority: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  'trust-anchors': { type: 'string' },
  'control-plane-state': { type: 'string' },
  identity: { type: 'string' },
  'trust-domain': { type: 'string' },
  max: { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

const badFlag = (msg: string): BpfmeshError => new BpfmeshError(ErrorCodes.BAD_FLAG, msg);
const METHODS = new Set(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'CONNECT', 'HEAD', 'TRACE']);

/** --to / --from: "IP", "CIDR", "IP:PORT", "[v6]:PORT" or ":PORT" as tap matches (destination or source). */
export function addrMatches(text: string, flag: string): Array<NonNullable<TapMatchIn['source']>> {
  const out: Array<NonNullable<TapMatchIn['source']>> = [];
  let host = text;
  let port: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (v6 !== null) [host, port] = [v6[1]!, v6[2]];
  else if (/^[^:]*:\d+$/.test(text)) [host, port] = [text.slice(0, text.lastIndexOf(':')), text.slice(text.lastIndexOf(':') + 1)];
  if (port !== undefined) {
    const p = Number(port);
    if (!Number.isInteger(p) || p < 1 || p > 65535) throw badFlag(`${flag}: "${text}": the port must be 1-65535`);
    out.push({ ports: { min: p, max: p } });
  }
  if (host !== '') {
    const cidr = parseCidr(host);
    if (cidr === null) throw badFlag(`${flag}: "${text}" is not an IP, CIDR, IP:PORT or :PORT`);
    const ip = encodeTcpAddress({ host: parseIp(host.split('/')[0]!) === null ? '0.0.0.0' : host.split('/')[0]!, port: 0 }).ip!;
    out.push({ netmask: { ip, mask: cidr.prefix } });
  }
  return out;
}

function hostPort(text: string): Addr {
  try {
    return parseHostPort(text, '--addr');
  } catch (err) {
    throw badFlag((err as Error).message);
  }
}

export interface TapFlags {
  where: { addr: Addr } | { pod: string; namespace: string | undefined };
  serverId: string | undefined;
  request: ObserveRequestIn;
  json: boolean;
}

export function parseTapFlags(argv: string[]): TapFlags & { v: ReturnType<typeof parse> } {
  const v = parse(argv);
  if ((v.pod === undefined) === (v.addr === undefined)) throw badFlag('bpfmesh tap: give one of --pod NAME or --addr HOST:PORT');
  const where = v.addr !== undefined ? { addr: hostPort(v.addr) } : { pod: v.pod!, namespace: v.namespace };
  const max = v.max === undefined ? 100 : Number(v.max);
  if (!Number.isInteger(max) || max < 1 || max > 1_000_000) throw badFlag(`--max: "${v.max}" is not a count (1-1000000)`);
  const all: TapMatchIn[] = [];
  if (v.to !== undefined) for (const m of addrMatches(v.to, '--to')) all.push({ destination: m });
  if (v.from !== undefined) for (const m of addrMatches(v.from, '--from')) all.push({ source: m });
  if (v.path !== undefined) all.push({ http: { path: { prefix: v.path } } });
  if (v.authority !== undefined) all.push({ http: { authority: { exact: v.authority } } });
  if (v.method !== undefined) {
    const m = v.method.toUpperCase();
    all.push({ http: { method: METHODS.has(m) ? { registered: m as 'GET' } : { unregistered: v.method } } });
  }
  return { where, serverId: v['server-id'], request: { limit: max, match: { all: { matches: all } } }, json: v.json, v };
}

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw badFlag(`bpfmesh tap: ${(err as Error).message}; see "bpfmesh tap --help"`);
  }
}

/** The pod's proxy: through this node's pins (like inspect), or through the Kubernetes API. */
async function locate(flags: TapFlags, v: ReturnType<typeof parse>): Promise<{ addr: Addr; serverId: string | undefined }> {
  const where = flags.where;
  if ('addr' in where) return { addr: where.addr, serverId: flags.serverId };
  if (where.namespace !== undefined) {
    const { loadKubeAccess } = await import('../kube/config.js');
    const { KubeClient } = await import('../kube/client.js');
    const pod = await new KubeClient(loadKubeAccess({ kubeconfig: v.kubeconfig })).getPod(where.namespace, where.pod);
    const ip = pod?.status?.podIP;
    if (pod === null || ip === undefined) throw new BpfmeshError(ErrorCodes.NOT_FOUND, `pod ${where.namespace}/${where.pod}: ${pod === null ? 'not found' : 'no IP yet'}`);
    const sa = typeof pod.spec?.['serviceAccountName'] === 'string' ? pod.spec['serviceAccountName'] : 'default';
    const td = v['trust-domain'] ?? 'cluster.local';
    const port = v['control-port'] === undefined ? 4190 : Number(v['control-port']);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw badFlag(`--control-port: "${v['control-port']}" is not a port`);
    return { addr: { host: ip, port }, serverId: flags.serverId ?? `${sa}.${where.namespace}.serviceaccount.identity.linkerd.${td}` };
  }
  const { inspectAll } = await import('../admin/inspect.js');
  const { pinRoot } = await import('../intercept/pod.js');
  const state = inspectAll(pinRoot(v.bpffs ?? DEFAULT_BPFFS), where.pod).find((p) => p.pod === where.pod);
  if (state === undefined) throw new BpfmeshError(ErrorCodes.NOT_FOUND, `no intercepted pod "${where.pod}" on this node (bpfmesh inspect lists them); or give --namespace for the Kubernetes API, or --addr`);
  const ip = state.localAddresses.find((a) => parseIp(a)?.family === 4 && !a.startsWith('127.')) ?? state.localAddresses.find((a) => a !== '::1');
  if (ip === undefined) throw new BpfmeshError(ErrorCodes.NOT_FOUND, `pod ${where.pod}: no own address recorded; give --addr`);
  return { addr: { host: ip, port: state.settings?.controlPort ?? 4190 }, serverId: flags.serverId };
}

async function material(v: ReturnType<typeof parse>): Promise<{ certPem: string; keyPem: string; trustAnchorsPem: string }> {
  const read = (file: string, flag: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw badFlag(`${flag} ${file}: ${(err as Error).message}`);
    }
  };
  if (v['control-plane-state'] !== undefined) {
    const { issueFromState } = await import('../controlplane/issue.js');
    const { createLogger } = await import('../log/logger.js');
    const issued = await issueFromState(v['control-plane-state'], v.identity ?? DEFAULT_TAP_IDENTITY, 3_600_000, createLogger({ logFormat: 'plain', logLevel: 'warn' }));
    return { ...issued, trustAnchorsPem: v['trust-anchors'] !== undefined ? read(v['trust-anchors'], '--trust-anchors') : issued.trustAnchorsPem };
  }
  if (v.cert === undefined || v.key === undefined || v['trust-anchors'] === undefined) {
    throw badFlag('bpfmesh tap: give the tap identity: --cert, --key and --trust-anchors (PEM files), or --control-plane-state DIR in a lab');
  }
  return { certPem: read(v.cert, '--cert'), keyPem: read(v.key, '--key'), trustAnchorsPem: read(v['trust-anchors'], '--trust-anchors') };
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseTapFlags(argv);
  const { v } = flags;
  const where = await locate(flags, v);
  const m = await material(v);
  const abort = new AbortController();
  const stop = (): void => abort.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await observe({
      addr: where.addr,
      serverId: where.serverId,
      ...m,
      request: flags.request,
      signal: abort.signal,
      onEvent: (ev) => process.stdout.write(`${flags.json ? JSON.stringify(tapEventJson(ev)) : formatTapEvent(ev)}\n`),
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
  return 0;
}
