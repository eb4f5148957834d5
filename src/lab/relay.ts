// A minimal transparent proxy for the lab: what the kernel data path needs
// from a proxy, and nothing more. It is how the tests, the benchmarks and
// the demo exercise interception before (and independently of) the real
// proxy: any proxy that reads SO_ORIGINAL_DST works with bpfmesh.
//
//   node relay.js --mode relay|report|echo [--outbound-port 4140] [--inbound-port 4143] [--no-ipv6]
//
// relay:  outbound connections go to their original destination, inbound
//         ones to the app at the accepted socket's local address.
// report: answer each connection with what the proxy learnt, then close
//         (an HTTP request gets an HTTP response).
// echo:   outbound connections send back every byte they get (socket-path tests).
// Each accepted connection prints one JSON line on stdout.
import { createServer, connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { native } from '../bpf/native.js';
import { formatAddr, stripMapped } from '../util/addr.js';

type Mode = 'relay' | 'report' | 'echo';

const { values } = parseArgs({
  options: {
    mode: { type: 'string', default: 'relay' },
    'outbound-port': { type: 'string', default: '4140' },
    'inbound-port': { type: 'string' },
    'no-ipv6': { type: 'boolean', default: false },
    quiet: { type: 'boolean', default: false },
  },
});
const mode = values.mode as Mode;
if (!['relay', 'report', 'echo'].includes(mode)) throw new Error(`--mode ${mode}: relay, report or echo`);

const hostPort = (host: string, port: number): string => formatAddr({ host, port });
const emit = (rec: Record<string, unknown>): void => {
  if (!values.quiet || rec['event'] === 'listening') process.stdout.write(JSON.stringify(rec) + '\n');
};

function fdOf(sock: Socket): number {
  return (sock as unknown as { _handle: { fd: number } })._handle.fd;
}

/** Answer with what was learnt; as HTTP when the first bytes look like a request. */
function report(sock: Socket, text: string): void {
  sock.on('error', () => sock.destroy());
  const answer = (first: Buffer | null): void => {
    sock.setTimeout(0); // answered: the idle timer must not fire on an ended socket
    if (sock.writableEnded || sock.destroyed) return;
    const body = text + '\n';
    if (first !== null && /^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/.test(first.toString('latin1'))) {
      sock.end(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
    } else {
      sock.end(body);
    }
  };
  sock.once('data', answer);
  // A client that sends nothing (or only closes its side) still gets the answer.
  sock.once('end', () => answer(null));
  sock.setTimeout(5000, () => answer(null));
}

function pipeBoth(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const fail = (): void => {
    a.destroy();
    b.destroy();
  };
  a.on('error', fail);
  b.on('error', fail);
}

function onOutbound(sock: Socket): void {
  const family = sock.remoteFamily === 'IPv6' ? 6 : 4;
  let orig: { address: string; port: number } | null = null;
  try {
    orig = native().originalDst(fdOf(sock), family);
  } catch (err) {
    emit({ event: 'error', direction: 'outbound', error: (err as Error).message });
  }
  emit({ event: 'accept', direction: 'outbound', peer: hostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0), orig: orig && hostPort(orig.address, orig.port) });
  if (mode === 'echo') {
    sock.on('error', () => sock.destroy());
    sock.pipe(sock);
    return;
  }
  if (orig === null) return void sock.destroy();
  if (mode === 'report') return report(sock, `outbound orig=${hostPort(orig.address, orig.port)}`);
  sock.pause();
  const upstream = connect({ host: orig.address, port: orig.port }, () => sock.resume());
  pipeBoth(sock, upstream);
}

function onInbound(sock: Socket): void {
  const local = { address: sock.localAddress ?? '', port: sock.localPort ?? 0 };
  emit({ event: 'accept', direction: 'inbound', peer: hostPort(sock.remoteAddress ?? '?', sock.remotePort ?? 0), orig: hostPort(local.address, local.port) });
  if (mode !== 'relay') return report(sock, `inbound local=${hostPort(local.address, local.port)}`);
  sock.pause();
  // To the app at the address the peer asked for; our source is local, so
  // the sk_lookup program lets it through to the app's own listener.
  const upstream = connect({ host: stripMapped(local.address), port: local.port }, () => sock.resume());
  pipeBoth(sock, upstream);
}

function listen(host: string, port: number, handler: (s: Socket) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const server = createServer({ pauseOnConnect: false }, handler);
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host === '::1' || host === '::' }, () => resolve());
  });
}

async function main(): Promise<void> {
  const out = Number(values['outbound-port']);
  await listen('127.0.0.1', out, onOutbound);
  if (!values['no-ipv6']) await listen('::1', out, onOutbound);
  if (values['inbound-port'] !== undefined) {
    const inPort = Number(values['inbound-port']);
    await listen('0.0.0.0', inPort, onInbound);
    if (!values['no-ipv6']) await listen('::', inPort, onInbound);
  }
  emit({ event: 'listening', mode, outbound: out, inbound: values['inbound-port'] ?? null });
}

process.on('SIGTERM', () => process.exit(0));
main().catch((err: unknown) => {
  process.stderr.write(`relay: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
