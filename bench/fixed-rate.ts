// A fixed-rate HTTP/1.1 load: RATE requests per second over CONNS keep-alive
// connections for SECONDS, and the latency percentiles of what it measured.
// Open-loop (requests are sent on schedule, not when the previous answer
// comes), so a slow path shows up in the tail instead of lowering the rate.
//   node fixed-rate.js <url> <rate> <seconds> [conns]
// Prints one JSON line: { sent, ok, errors, p50Ms, p90Ms, p99Ms, maxMs }.
import { Agent, request } from 'node:http';

const [url = '', rateArg = '1000', secondsArg = '5', connsArg = '16'] = process.argv.slice(2);
const rate = Number(rateArg);
const seconds = Number(secondsArg);
const agent = new Agent({ keepAlive: true, maxSockets: Number(connsArg) });
const latencies: number[] = [];
let errors = 0;
let sent = 0;

function one(): Promise<void> {
  const start = process.hrtime.bigint();
  sent++;
  return new Promise((resolve) => {
    const req = request(url, { agent }, (res) => {
      res.resume();
      res.on('end', () => {
        latencies.push(Number(process.hrtime.bigint() - start) / 1e6);
        resolve();
      });
    });
    req.on('error', () => {
      errors++;
      resolve();
    });
    req.end();
  });
}

async function main(): Promise<void> {
  const total = rate * seconds;
  const pending: Array<Promise<void>> = [];
  const t0 = Date.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - Date.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    pending.push(one());
  }
  await Promise.all(pending);
  agent.destroy();
  const s = latencies.sort((a, b) => a - b);
  const pct = (p: number): number => s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
  process.stdout.write(JSON.stringify({ sent, ok: s.length, errors, p50Ms: pct(50), p90Ms: pct(90), p99Ms: pct(99), maxMs: s.at(-1) ?? NaN }) + '\n');
}
void main();
