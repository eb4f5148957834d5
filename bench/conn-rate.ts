// New TCP connections per second: CONNS loops each connect, send a line,
// wait for the first answer byte, close; for SECONDS (bounded). Through the
// mesh every connection is a new proxy-to-proxy connection (opaque TCP is
// not pooled), so with mTLS every one pays a TLS handshake.
//   node conn-rate.js <host> <port> <conns> <seconds>
// Prints one JSON line: { ok, errors, perSec, p50Ms, p99Ms }.
import { connect } from 'node:net';

const [host = '', portArg = '0', connsArg = '8', secondsArg = '4'] = process.argv.slice(2);
const deadline = Date.now() + Number(secondsArg) * 1000;
const latencies: number[] = [];
let errors = 0;

function one(): Promise<void> {
  const start = process.hrtime.bigint();
  return new Promise((resolve) => {
    const s = connect({ host, port: Number(portArg) }, () => s.write('hello\n'));
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.once('data', () => {
      latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
      s.destroy();
      resolve();
    });
    s.once('error', () => {
      errors++;
      resolve();
    });
    s.once('close', () => resolve());
  });
}

async function loop(): Promise<void> {
  while (Date.now() < deadline) await one();
}

async function main(): Promise<void> {
  const t0 = Date.now();
  await Promise.all(Array.from({ length: Number(connsArg) }, loop));
  const s = latencies.sort((a, b) => a - b);
  const pct = (p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
  process.stdout.write(JSON.stringify({ ok: s.length, errors, perSec: s.length / ((Date.now() - t0) / 1000), p50Ms: pct(50), p99Ms: pct(99) }) + '\n');
}
void main();
