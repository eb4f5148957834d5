// The proxy end to end: two pods, each with `bpfmesh init` and `bpfmesh
// proxy` (as uid 2102, no capabilities), unmodified apps and clients. Every
// request crosses the client pod's outbound proxy and the server pod's
// inbound proxy, asserted through each proxy's metrics.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { REPO_ROOT } from '../../src/config/paths.js';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PodProcess } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';

const skip = kernelSkipReason();
const FIXTURES = join(REPO_ROOT, 'dist', 'test', 'fixtures');
const APP_SERVER = join(FIXTURES, 'app-server.js');
const GRPC = join(FIXTURES, 'grpc-echo.js');

function rssMb(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN) / 1024;
}

/** One sample's value from Prometheus text, summed over series whose labels include all of `labels`. */
function sample(text: string, name: string, labels: Record<string, string>): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && !line.startsWith(name + ' ')) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

describe('proxy end to end', { skip, timeout: 240_000 }, () => {
  let mesh: MeshLab;
  let a: LabPod;
  let b: LabPod;
  const proxies = new Map<LabPod, PodProcess>();

  const metrics = async (pod: LabPod): Promise<string> => mesh.curl(pod, 'http://127.0.0.1:4191/metrics');

  before(async () => {
    mesh = new MeshLab(87);
    a = mesh.pod('a');
    b = mesh.pod('b');
    for (const pod of [a, b]) {
      await mesh.init(pod);
      // A short grace keeps the drain test bounded: connections idle in a keep-alive pool are only closed when it ends.
      proxies.set(pod, await mesh.proxy(pod, { LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD: '10s' }));
    }
    const app = new PodProcess(mesh.lab.spawn(b, process.execPath, [APP_SERVER], APP));
    await app.waitFor((e) => e.event === 'ready');
    const grpcServer = new PodProcess(mesh.lab.spawn(b, process.execPath, [GRPC, 'server', '50051'], APP));
    await grpcServer.waitFor((e) => e.event === 'ready');
  });
  after(() => mesh?.cleanup());

  test('/live and /ready on the admin port', async () => {
    assert.equal(await mesh.curl(a, 'http://127.0.0.1:4191/live'), 'live');
    assert.equal(await mesh.curl(a, 'http://127.0.0.1:4191/ready'), 'ready');
  });

  test('curl HTTP/1.1 from pod a to pod b crosses both proxies', async () => {
    const before = { out: sample(await metrics(a), 'request_total', { direction: 'outbound' }), in: sample(await metrics(b), 'request_total', { direction: 'inbound' }) };
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/one`), `hello /one from ${b.ip4}:8080 1.1`);
    assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/two`), `hello /two from ${b.ip4}:8080 1.1`);
    const ma = await metrics(a);
    const mb = await metrics(b);
    assert.equal(sample(ma, 'request_total', { direction: 'outbound' }) - before.out, 2, 'outbound proxy in pod a saw both');
    assert.equal(sample(mb, 'request_total', { direction: 'inbound' }) - before.in, 2, 'inbound proxy in pod b saw both');
    assert.ok(sample(ma, 'response_total', { direction: 'outbound', status_code: '200', classification: 'success', target_addr: `${b.ip4}:8080` }) >= 2, ma);
    assert.ok(sample(mb, 'response_latency_ms_count', { direction: 'inbound' }) >= 2);
  });

  test('curl --http2-prior-knowledge crosses both proxies', async () => {
    const before = sample(await metrics(b), 'request_total', { direction: 'inbound', target_addr: `${b.ip4}:8081` });
    const r = await mesh.lab.exec(a, 'curl', ['-sS', '--http2-prior-knowledge', '--max-time', '5', `http://${b.ip4}:8081/h2`], APP);
    assert.equal(r.stdout.trim(), `hello /h2 from ${b.ip4}:8081 2.0`, r.stderr);
    assert.equal(sample(await metrics(b), 'request_total', { direction: 'inbound', target_addr: `${b.ip4}:8081` }) - before, 1);
  });

  test('100 MiB bodies arrive byte-identical both ways', async () => {
    const r = await mesh.lab.exec(a, 'sh', ['-c', `head -c 104857600 /dev/urandom > /tmp/bpfmesh-e2e-body.$$ && sha256sum /tmp/bpfmesh-e2e-body.$$ | cut -d' ' -f1 && curl -sS --max-time 60 --data-binary @/tmp/bpfmesh-e2e-body.$$ http://${b.ip4}:8080/upload; rm -f /tmp/bpfmesh-e2e-body.$$`], APP, 90_000);
    const [localSum, remote] = r.stdout.trim().split('\n');
    assert.equal(remote, `104857600 ${localSum}`, r.stderr);
    const down = await mesh.lab.exec(a, 'sh', ['-c', `curl -sS --max-time 60 http://${b.ip4}:8080/bytes/104857600 | wc -c`], APP, 90_000);
    assert.equal(down.stdout.trim(), '104857600', down.stderr);
  });

  test('opaque TCP echo crosses both proxies, with byte counts', async () => {
    const before = sample(await metrics(b), 'tcp_read_bytes_total', { direction: 'inbound', peer: 'src', target_addr: `${b.ip4}:9000` });
    assert.equal(await mesh.nc(a, b.ip4, 9000), 'hello');
    await new Promise((r) => setTimeout(r, 200));
    const after = sample(await metrics(b), 'tcp_read_bytes_total', { direction: 'inbound', peer: 'src', target_addr: `${b.ip4}:9000` });
    assert.equal(after - before, 6, 'the inbound proxy read "hello\\n" from the client side');
  });

  test('a server-speaks-first protocol on an opaque port answers at once', async () => {
    const started = Date.now();
    const r = await mesh.lab.exec(a, 'nc', ['-w', '3', '-q', '0', b.ip4, '3306'], APP, 8000);
    assert.match(r.stdout, /greeting from 3306/);
    assert.ok(Date.now() - started < 5000, 'no detection timeout (10 s) on an opaque port');
  });

  test('gRPC unary, server-streaming and an error status through two proxies', async () => {
    const before = sample(await metrics(a), 'response_total', { direction: 'outbound', grpc_status: '5' });
    const r = await mesh.lab.exec(a, process.execPath, [GRPC, 'client', `${b.ip4}:50051`], APP, 30_000);
    const out = JSON.parse(r.stdout) as { echo?: string; streamed?: number; inOrder?: boolean; failCode?: number; failDetails?: string };
    assert.deepEqual(out, { echo: 'echo hi', streamed: 500, inOrder: true, failCode: 5, failDetails: 'no such thing' }, r.stderr);
    const ma = await metrics(a);
    assert.equal(sample(ma, 'response_total', { direction: 'outbound', grpc_status: '5', classification: 'failure' }) - before, 1, 'the NOT_FOUND call is a failure');
    assert.ok(sample(ma, 'response_total', { direction: 'outbound', grpc_status: '0', classification: 'success' }) >= 2);
  });

  test('a WebSocket upgrade is spliced as bytes after the 101', async () => {
    const r = await mesh.lab.exec(a, process.execPath, [join(FIXTURES, 'ws-client.js'), b.ip4, '8080'], APP, 15_000);
    assert.deepEqual(JSON.parse(r.stdout), { upgraded: true, acceptOk: true, echoed: 'ping-1 ping-2' }, r.stderr);
  });

  test("a slow reader of a 1 GiB response keeps both proxies' memory bounded", async () => {
    const pids = [a, b].map((p) => proxies.get(p)!.child.pid!);
    const base = pids.map(rssMb);
    const reader = new PodProcess(mesh.lab.spawn(a, process.execPath, [join(FIXTURES, 'slow-reader.js'), `http://${b.ip4}:8080/bytes/1073741824`], APP));
    try {
      await reader.waitFor((e) => e.event.startsWith('stalled'), 20_000);
      const grown = pids.map((pid, i) => rssMb(pid) - base[i]!);
      // Bound: 64 MiB over the idle proxy, for socket buffers and one pool of chunks; 1 GiB would not fit.
      for (const g of grown) assert.ok(g < 64, `proxy RSS grew by ${g.toFixed(1)} MiB`);
    } finally {
      reader.stop();
    }
  });

  test('SIGTERM drains: an in-flight request finishes, then the proxy exits 0', async () => {
    const seen = async (): Promise<number> => sample(await metrics(b), 'request_total', { direction: 'inbound', target_addr: `${b.ip4}:8080` });
    const before = await seen();
    const inflight = mesh.lab.exec(a, 'curl', ['-sS', '--max-time', '10', `http://${b.ip4}:8080/slow/1500`], APP, 15_000);
    // SIGTERM only once the request is in pod b's proxy (slow machines take a while to get there).
    for (let i = 0; i < 100 && (await seen()) === before; i++) await new Promise((r) => setTimeout(r, 50));
    const proxyB = proxies.get(b)!;
    proxyB.child.kill('SIGTERM');
    const r = await inflight;
    assert.equal(r.stdout.trim(), `hello /slow/1500 from ${b.ip4}:8080 1.1`, r.stderr);
    const code = await new Promise<number | null>((res) => (proxyB.child.exitCode !== null ? res(proxyB.child.exitCode) : proxyB.child.once('exit', (c) => res(c))));
    assert.equal(code, 0, proxyB.stderr);
  });
});
