// The HTTP/2 forwarder's header rules and error vocabulary, without sockets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants as h2, sensitiveHeaders, type IncomingHttpHeaders } from 'node:http2';
import { BpfmeshError } from '../../src/errors.js';
import { passBeforeResponse, resetName, statusFor, upstreamResetToClient } from '../../src/proxy/h2/codes.js';
import { classify, grpcMessage, grpcStatusOf, headerText, requestHeaders, responseHeaders, trailerHeaders } from '../../src/proxy/h2/headers.js';

test('request headers: pseudo-headers kept, connection-specific fields dropped, te only as "trailers"', () => {
  const h = {
    ':method': 'POST',
    ':path': '/a?b',
    ':scheme': 'http',
    ':authority': 'svc:80',
    ':protocol': 'websocket',
    connection: 'keep-alive',
    'keep-alive': 'timeout=5',
    'proxy-connection': 'x',
    'transfer-encoding': 'chunked',
    upgrade: 'h2c',
    'http2-settings': 'AAA',
    te: 'trailers, deflate',
    'x-a': ['1', '2'],
  } as IncomingHttpHeaders;
  assert.deepEqual(requestHeaders(h), { ':method': 'POST', ':path': '/a?b', ':scheme': 'http', ':authority': 'svc:80', te: 'trailers', 'x-a': ['1', '2'] });
  assert.equal(requestHeaders({ ':path': '/', te: 'gzip' })['te'], undefined);
  // `host` stands in for a missing :authority.
  assert.equal(requestHeaders({ ':path': '/', host: 'web:8080' })[':authority'], 'web:8080');
});

test('the never-index list survives the copy', () => {
  const h = { ':path': '/', authorization: 'secret', [sensitiveHeaders]: ['authorization'] } as IncomingHttpHeaders;
  const out = requestHeaders(h) as Record<string | symbol, unknown>;
  assert.deepEqual(out[sensitiveHeaders], ['authorization']);
});

test('response headers keep :status only; trailers keep no pseudo-header', () => {
  assert.deepEqual(responseHeaders({ ':status': '200', ':path': '/x', connection: 'close', 'x-b': 'c' }), { ':status': '200', 'x-b': 'c' });
  assert.deepEqual(trailerHeaders({ 'grpc-status': '0', ':status': '200' }), { 'grpc-status': '0' });
});

test('grpc-status parsing and classification', () => {
  assert.equal(grpcStatusOf({ 'grpc-status': '0' }), 0);
  assert.equal(grpcStatusOf({ 'grpc-status': '14' }), 14);
  assert.equal(grpcStatusOf({ 'grpc-status': 'x' }), undefined);
  assert.equal(grpcStatusOf({}), undefined);
  assert.equal(classify(200, 0, undefined), 'success');
  assert.equal(classify(200, 5, undefined), 'failure');
  assert.equal(classify(500, 0, undefined), 'success'); // gRPC status decides when there is one
  assert.equal(classify(503, undefined, undefined), 'failure');
  assert.equal(classify(404, undefined, undefined), 'success');
  assert.equal(classify(200, undefined, 'cancel'), 'failure');
});

test('proxy error text: one printable line; grpc-message percent-encoded', () => {
  assert.equal(headerText('a\r\nb\x00c'), 'a b c');
  assert.equal(headerText('x'.repeat(2000)).length, 512);
  assert.equal(grpcMessage('100% ok é'), '100%25 ok %C3%A9');
});

test('status for an error code: 503 unavailable, 504 timeouts, else 502', () => {
  assert.equal(statusFor(new BpfmeshError('BPFMESH_E_UNAVAILABLE', 'x')), 503);
  assert.equal(statusFor(new BpfmeshError('BPFMESH_E_FAILFAST', 'x')), 504);
  assert.equal(statusFor(new BpfmeshError('BPFMESH_E_CONNECT_TIMEOUT', 'x')), 504);
  assert.equal(statusFor(new BpfmeshError('BPFMESH_E_CONNECT', 'x')), 502);
  assert.equal(statusFor(new Error('x')), 502);
});

test('reset codes: names, and what crosses to the client before a response', () => {
  assert.equal(resetName(h2.NGHTTP2_CANCEL), 'cancel');
  assert.equal(resetName(h2.NGHTTP2_HTTP_1_1_REQUIRED), 'http_1_1_required');
  assert.equal(resetName(99), 'code_99');
  assert.equal(upstreamResetToClient(h2.NGHTTP2_REFUSED_STREAM), h2.NGHTTP2_REFUSED_STREAM);
  assert.equal(upstreamResetToClient(h2.NGHTTP2_PROTOCOL_ERROR), h2.NGHTTP2_INTERNAL_ERROR);
  assert.equal(upstreamResetToClient(h2.NGHTTP2_FLOW_CONTROL_ERROR), h2.NGHTTP2_INTERNAL_ERROR);
  assert.ok(passBeforeResponse(h2.NGHTTP2_ENHANCE_YOUR_CALM));
  assert.ok(!passBeforeResponse(h2.NGHTTP2_INTERNAL_ERROR));
});
