// gRPC through serveH2: @grpc/grpc-js client and server (insecure h2c),
// messages serialized as JSON so no .proto is needed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import http2, { type IncomingHttpHeaders } from 'node:http2';
import { closedPort, connectClient, startProxy, until, type TestProxy } from '../helpers/h2.js';

interface Req {
  msg: string;
  n?: number;
}
interface Res {
  msg: string;
  i?: number;
}

const ser = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));
const de = <T>(b: Buffer): T => JSON.parse(b.toString()) as T;

function method(path: string, responseStream: boolean): grpc.MethodDefinition<Req, Res> {
  return {
    path,
    requestStream: false,
    responseStream,
    requestSerialize: ser,
    requestDeserialize: (b: Buffer) => de<Req>(b),
    responseSerialize: ser,
    responseDeserialize: (b: Buffer) => de<Res>(b),
  };
}

const SERVICE: grpc.ServiceDefinition = {
  Echo: method('/test.Echo/Echo', false),
  Fail: method('/test.Echo/Fail', false),
  Count: method('/test.Echo/Count', true),
  CountThenFail: method('/test.Echo/CountThenFail', true),
  Forever: method('/test.Echo/Forever', true),
};

let server: grpc.Server;
let port: number;
let proxy: TestProxy;
let client: grpc.Client;
let foreverCancelled = false;

before(async () => {
  server = new grpc.Server();
  server.addService(SERVICE, {
    Echo: (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => cb(null, { msg: `echo ${call.request.msg}` }),
    Fail: (_call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => {
      const md = new grpc.Metadata();
      md.set('x-why', 'because');
      cb({ code: grpc.status.NOT_FOUND, details: 'nope', metadata: md });
    },
    Count: (call: grpc.ServerWritableStream<Req, Res>) => {
      for (let i = 0; i < (call.request.n ?? 0); i++) call.write({ msg: call.request.msg, i });
      call.end();
    },
    CountThenFail: (call: grpc.ServerWritableStream<Req, Res>) => {
      for (let i = 0; i < 3; i++) call.write({ msg: 'x', i });
      call.emit('error', { code: grpc.status.ABORTED, details: 'gave up after 3' });
    },
    Forever: (call: grpc.ServerWritableStream<Req, Res>) => {
      const timer = setInterval(() => call.write({ msg: 'tick' }), 5);
      call.on('cancelled', () => {
        foreverCancelled = true;
        clearInterval(timer);
      });
    },
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  proxy = await startProxy({ route: () => ({ host: '127.0.0.1', port }) });
  client = new grpc.Client(`127.0.0.1:${proxy.port}`, grpc.credentials.createInsecure());
});

after(async () => {
  client?.close();
  await proxy?.close();
  await new Promise<void>((resolve) => (server ? server.tryShutdown(() => resolve()) : resolve()));
});

function unary(c: grpc.Client, path: string, req: Req): Promise<{ res?: Res; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    c.makeUnaryRequest(path, ser, (b: Buffer) => de<Res>(b), req, (err, res) => resolve(err ? { err } : res ? { res } : {}));
  });
}

function serverStream(c: grpc.Client, path: string, req: Req): Promise<{ msgs: Res[]; status?: grpc.StatusObject; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const call = c.makeServerStreamRequest(path, ser, (b: Buffer) => de<Res>(b), req);
    const msgs: Res[] = [];
    let err: grpc.ServiceError | undefined;
    call.on('data', (m: Res) => msgs.push(m));
    call.on('error', (e: grpc.ServiceError) => (err = e));
    call.on('status', (status: grpc.StatusObject) => resolve({ msgs, status, ...(err ? { err } : {}) }));
  });
}

const lastResponse = (p: TestProxy) => p.metrics.responses[p.metrics.responses.length - 1];

test('unary call goes through; counted with grpc_status 0 as a success', async () => {
  const n = proxy.metrics.responses.length;
  const r = await unary(client, '/test.Echo/Echo', { msg: 'hi' });
  assert.deepEqual(r.res, { msg: 'echo hi' });
  await until(() => proxy.metrics.responses.length === n + 1, 2000, 'response metric');
  const m = lastResponse(proxy);
  assert.equal(m?.statusCode, 200);
  assert.equal(m?.grpcStatus, 0);
  assert.equal(m?.classification, 'success');
});

test('server-streaming call: 2000 messages in order, status OK from the trailers', async () => {
  const r = await serverStream(client, '/test.Echo/Count', { msg: 'm', n: 2000 });
  assert.equal(r.status?.code, grpc.status.OK);
  assert.equal(r.msgs.length, 2000);
  assert.ok(r.msgs.every((m, i) => m.i === i));
});

test('a gRPC error (trailers-only response) reaches the client with its details and metadata; counted as a failure', async () => {
  const n = proxy.metrics.responses.length;
  const r = await unary(client, '/test.Echo/Fail', { msg: 'x' });
  assert.equal(r.err?.code, grpc.status.NOT_FOUND);
  assert.equal(r.err?.details, 'nope');
  assert.deepEqual(r.err?.metadata.get('x-why'), ['because']);
  await until(() => proxy.metrics.responses.length === n + 1, 2000, 'response metric');
  assert.equal(lastResponse(proxy)?.grpcStatus, grpc.status.NOT_FOUND);
  assert.equal(lastResponse(proxy)?.classification, 'failure');
});

test('the error above travels as a trailers-only response (grpc-status in HEADERS with END_STREAM)', async () => {
  const c = await connectClient(`http://127.0.0.1:${proxy.port}`);
  try {
    const msg = ser({ msg: 'x' });
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, msg.length]), msg]);
    const req = c.request({ ':method': 'POST', ':path': '/test.Echo/Fail', 'content-type': 'application/grpc', te: 'trailers' });
    let trailers: IncomingHttpHeaders | undefined;
    req.on('trailers', (t: IncomingHttpHeaders) => (trailers = t));
    const response = new Promise<[IncomingHttpHeaders, number]>((resolve) => req.once('response', (h, f) => resolve([h, f])));
    req.end(frame);
    req.resume();
    const [headers, flags] = await response;
    await new Promise((r) => req.once('close', r));
    assert.equal(flags & http2.constants.NGHTTP2_FLAG_END_STREAM, http2.constants.NGHTTP2_FLAG_END_STREAM);
    assert.equal(headers['grpc-status'], String(grpc.status.NOT_FOUND));
    assert.equal(headers['grpc-message'], 'nope');
    assert.equal(trailers, undefined);
  } finally {
    c.close();
  }
});

test('a gRPC error in the trailers after messages reaches the client', async () => {
  const n = proxy.metrics.responses.length;
  const r = await serverStream(client, '/test.Echo/CountThenFail', { msg: 'x' });
  assert.equal(r.msgs.length, 3);
  assert.equal(r.status?.code, grpc.status.ABORTED);
  assert.equal(r.status?.details, 'gave up after 3');
  await until(() => proxy.metrics.responses.length === n + 1, 2000, 'response metric');
  assert.equal(lastResponse(proxy)?.grpcStatus, grpc.status.ABORTED);
  assert.equal(lastResponse(proxy)?.classification, 'failure');
});

test('client cancel of a server stream reaches the server', async () => {
  foreverCancelled = false;
  const call = client.makeServerStreamRequest('/test.Echo/Forever', ser, (b: Buffer) => de<Res>(b), { msg: 'x' });
  call.on('error', () => {});
  let got = 0;
  await new Promise<void>((resolve) =>
    call.on('data', () => {
      if (++got === 10) resolve();
    }),
  );
  call.cancel();
  await until(() => foreverCancelled, 3000, 'server-side cancellation');
});

test('upstream unreachable: the gRPC client gets UNAVAILABLE with the proxy error (status 200, grpc-status 14)', async () => {
  const dead = await closedPort();
  const p = await startProxy({ route: () => ({ host: '127.0.0.1', port: dead }) });
  const c = new grpc.Client(`127.0.0.1:${p.port}`, grpc.credentials.createInsecure());
  try {
    const r = await unary(c, '/test.Echo/Echo', { msg: 'hi' });
    assert.equal(r.err?.code, grpc.status.UNAVAILABLE);
    assert.match(r.err?.details ?? '', /ECONNREFUSED/);
    assert.match(String(r.err?.metadata.get('l5d-proxy-error')[0]), /ECONNREFUSED/);
    await until(() => p.metrics.responses.length === 1, 2000, 'response metric');
    assert.deepEqual(
      { ...p.metrics.responses[0], labels: undefined, latencyMs: 0 },
      { statusCode: 200, grpcStatus: 14, classification: 'failure', error: 'bad_gateway', labels: undefined, latencyMs: 0 },
    );
  } finally {
    c.close();
    await p.close();
  }
});
