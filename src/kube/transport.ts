// The connection pool of the Kubernetes client: TLS as the kubeconfig or
// service account says (CA, client certificate, tls-server-name), directly
// or tunnelled through an http:// proxy with CONNECT (proxy-url).
import { Agent as HttpAgent, type AgentOptions } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import { formatAddr } from '../util/addr.js';
import type { KubeAccess } from './config.js';

/** Connecting to the proxy and its answer to CONNECT must take less than this. */
export const PROXY_CONNECT_TIMEOUT_MS = 10_000;
const MAX_PROXY_HEAD_BYTES = 16 << 10;

export interface ClientCert {
  cert: Buffer | undefined;
  key: Buffer | undefined;
}

export function createKubeAgent(access: KubeAccess, creds: ClientCert = { cert: access.cert, key: access.key }): HttpAgent {
  const https = access.server.startsWith('https:');
  const opts: AgentOptions & ConnectionOptions = https
    ? {
        keepAlive: true,
        ...(access.ca ? { ca: access.ca } : {}),
        ...(creds.cert ? { cert: creds.cert } : {}),
        ...(creds.key ? { key: creds.key } : {}),
        ...(access.tlsServerName ? { servername: access.tlsServerName } : {}),
        rejectUnauthorized: !access.insecureSkipTlsVerify,
      }
    : { keepAlive: true };
  const agent = https ? new HttpsAgent(opts) : new HttpAgent(opts);
  if (access.proxyUrl !== undefined) viaProxy(agent, new URL(access.proxyUrl), https);
  return agent;
}

type CreateConnection = (options: ConnectionOptions & { host?: string; port?: number }, cb: (err: Error | null, socket?: Socket) => void) => Socket | undefined;

/** Makes every connection of the agent a CONNECT tunnel through the proxy (TLS inside it for https). */
function viaProxy(agent: HttpAgent, proxy: URL, https: boolean): void {
  // Node's agent accepts a socket handed to the callback later (returning nothing).
  (agent as unknown as { createConnection: CreateConnection }).createConnection = (options, cb) => {
    const host = options.host ?? 'localhost';
    const port = options.port ?? (https ? 443 : 80);
    openTunnel(proxy, host, port).then(
      (socket) => cb(null, https ? tlsConnect({ ...options, socket }) : socket),
      (err: Error) => cb(err),
    );
    return undefined;
  };
}

const proxyError = (proxy: URL, msg: string, cause?: unknown): BpfmeshError =>
  new BpfmeshError(ErrorCodes.KUBE_API, `proxy ${proxy.host}: ${msg}`, cause === undefined ? {} : { cause });

export function openTunnel(proxy: URL, host: string, port: number): Promise<Socket> {
  const target = formatAddr({ host, port });
  const auth = proxy.username !== '' ? `Proxy-Authorization: Basic ${Buffer.from(`${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`).toString('base64')}\r\n` : '';
  return new Promise((resolve, reject) => {
    const sock = netConnect({ host: proxy.hostname.replace(/^\[|\]$/g, ''), port: proxy.port === '' ? 80 : Number(proxy.port) });
    let head = Buffer.alloc(0);
    const fail = (err: Error): void => {
      sock.destroy();
      reject(err);
    };
    sock.setTimeout(PROXY_CONNECT_TIMEOUT_MS, () => fail(proxyError(proxy, `no answer to CONNECT ${target} in ${PROXY_CONNECT_TIMEOUT_MS} ms`)));
    sock.once('error', (err) => fail(proxyError(proxy, `CONNECT ${target}: ${err.message}`, err)));
    sock.once('connect', () => sock.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`));
    const onData = (d: Buffer): void => {
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_PROXY_HEAD_BYTES) fail(proxyError(proxy, `an answer to CONNECT larger than ${MAX_PROXY_HEAD_BYTES} bytes`));
        return;
      }
      sock.off('data', onData);
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString('latin1'));
      if (status === null || !status[1]!.startsWith('2')) {
        return fail(proxyError(proxy, `CONNECT ${target} refused: ${head.subarray(0, Math.min(end, 200)).toString('latin1').split('\r\n')[0]}`));
      }
      sock.setTimeout(0);
      sock.removeAllListeners('error');
      const rest = head.subarray(end + 4);
      if (rest.length > 0) sock.unshift(rest);
      resolve(sock);
    };
    sock.on('data', onData);
  });
}
