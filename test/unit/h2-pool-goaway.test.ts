// The HTTP/2 upstream pool and a session that began closing while still in
// the pool: the request goes on a fresh session. On Node 22 the old session's
// request() threw; on Node 24 it returns a stream that errors later
// (ERR_HTTP2_GOAWAY_SESSION), so the pool must look before it asks.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { H2UpstreamPool } from '../../src/proxy/h2/index.js';
import type { Addr } from '../../src/proxy/types.js';
import { netConnector, silentLog } from '../helpers/h2.js';

let server: http2.Http2Server;
let addr: Addr;
let sessions = 0;

before(async () => {
  server = http2.createServer((req, res) => res.end(`ok ${req.url}`));
  server.on('session', () => sessions++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  addr = { host: '127.0.0.1', port: (server.address() as AddressInfo).port };
});
after(() => server.close());

async function get(pool: H2UpstreamPool, path: string): Promise<string> {
  const up = await pool.request(addr, netConnector(), { ':path': path }, {}, () => false);
  assert.ok(up !== undefined);
  return new Promise((resolve, reject) => {
    let body = '';
    up.stream.setEncoding('utf8');
    up.stream.on('data', (d: string) => (body += d));
    up.stream.once('end', () => resolve(body));
    up.stream.once('error', reject);
  });
}

test(`a pooled session that is closing is not used: the request opens a fresh one (Node ${process.version})`, async () => {
  const pool = new H2UpstreamPool({ log: silentLog });
  try {
    assert.equal(await get(pool, '/one'), 'ok /one');
    const first = await pool.ready({ addr, weight: 1, labels: {} }, netConnector());
    first.close(); // closing now; the pool hears of it only when 'close' fires
    assert.equal(first.closed, true);
    assert.equal(await get(pool, '/two'), 'ok /two', 'answered, not failed with ERR_HTTP2_GOAWAY_SESSION');
    assert.equal(sessions, 2, 'on a second session');
  } finally {
    await pool.close();
  }
});
