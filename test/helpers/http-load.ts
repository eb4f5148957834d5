// A bounded closed-loop HTTP/1.1 keep-alive client for the mesh tests, run
// inside a pod: CONNS workers send GET requests back to back until MAX
// requests were sent or SECONDS passed, whichever comes first. Every answer
// is attributed to the server that wrote it (app-server's "hello <path> from
// <ip>:<port>" body), with the time it was sent and answered, so a test can
// tell which endpoint set served which moment. Answers of /whoami
// ("client-id <id>") are keyed "client-id:<id>" instead. SIGTERM stops it
// early (requests in flight finish) and it reports as usual.
//   node http-load.js <url> <conns> <max> <seconds>
// Prints {"event":"started","t0":…} first, then one JSON line:
//   {"event":"done", ok, failed, byServer: {addr: [[sentMs, doneMs], …]}, failures: [{t, status, error}]}
// with epoch milliseconds (the test's clock: same host).
import { Agent, request } from 'node:http';

const [url = '', connsArg = '4', maxArg = '3000', secondsArg = '5'] = process.argv.slice(2);
const conns = Number(connsArg);
const max = Number(maxArg);
const deadline = Date.now() + Number(secondsArg) * 1000;
const agent = new Agent({ keepAlive: true, maxSockets: conns });
const byServer: Record<string, Array<[number, number]>> = {};
const failures: Array<{ t: number; status?: number; error: string }> = [];
let sent = 0;
let ok = 0;
let stopped = false;
process.once('SIGTERM', () => (stopped = true));

function one(): Promise<void> {
  const t = Date.now();
  return new Promise((resolve) => {
    const req = request(url, { agent, timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('error', (err) => {
        failures.push({ t, error: `response: ${err.message}` });
        resolve();
      });
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        const who = /^client-id (\S+)/.exec(body)?.[1];
        const from = / from (\S+) /.exec(body)?.[1] ?? (who === undefined ? undefined : `client-id:${who}`);
        if (res.statusCode === 200 && from !== undefined) {
          ok++;
          (byServer[from] ??= []).push([t, Date.now()]);
        } else {
          failures.push({ t, status: res.statusCode ?? 0, error: `${String(res.headers['l5d-proxy-error'] ?? '')} ${body.slice(0, 200)}`.trim() });
        }
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => {
      failures.push({ t, error: err.message });
      resolve();
    });
    req.end();
  });
}

async function worker(): Promise<void> {
  while (!stopped && sent < max && Date.now() < deadline) {
    sent++;
    await one();
  }
}

async function main(): Promise<void> {
  process.stdout.write(JSON.stringify({ event: 'started', t0: Date.now() }) + '\n');
  await Promise.all(Array.from({ length: conns }, () => worker()));
  agent.destroy();
  process.stdout.write(JSON.stringify({ event: 'done', sent, ok, failed: failures.length, byServer, failures: failures.slice(0, 20) }) + '\n');
}
void main();
