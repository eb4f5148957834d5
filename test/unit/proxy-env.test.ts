import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_DURATION_MS,
  formatOpaquePorts,
  isOpaquePort,
  logLevelOfFilter,
  parseDuration,
  parseHostPort,
  parseProxyEnv,
} from '../../src/config/proxy-env.js';
import { x509 } from '../../src/control/x509.js';

test('an empty environment gives Linkerd defaults', () => {
  const c = parseProxyEnv({});
  assert.deepEqual(c.outbound.listenAddr, { host: '127.0.0.1', port: 4140 });
  assert.deepEqual(c.inbound.listenAddr, { host: '0.0.0.0', port: 4143 });
  assert.deepEqual(c.adminListenAddr, { host: '127.0.0.1', port: 4191 });
  assert.deepEqual(c.controlListenAddr, { host: '0.0.0.0', port: 4190 });
  assert.equal(c.inbound.connectTimeoutMs, 300);
  assert.equal(c.outbound.connectTimeoutMs, 1000);
  assert.equal(c.inbound.detectTimeoutMs, 10_000);
  assert.equal(c.outbound.detectTimeoutMs, 10_000);
  assert.equal(c.inbound.httpFailfastTimeoutMs, 1000);
  assert.equal(c.outbound.httpFailfastTimeoutMs, 3000);
  assert.equal(c.outbound.tcpFailfastTimeoutMs, 3000);
  assert.equal(c.inbound.http1PoolIdleTimeoutMs, 3000);
  assert.equal(c.outbound.http1PoolIdleTimeoutMs, 3000);
  assert.equal(c.shutdownGracePeriodMs, 120_000);
  assert.equal(c.shutdownEndpointEnabled, false);
  assert.equal(formatOpaquePorts(c), '25,587,3306,4444,5432,6379,9300,11211');
  assert.deepEqual(c.log, { logLevel: 'info', logFormat: 'plain' });
  assert.equal(c.logFilter, 'warn,linkerd=info');
});

test('values an injector writes are read', () => {
  const c = parseProxyEnv({
    LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR: '127.0.0.1:14140',
    LINKERD2_PROXY_INBOUND_LISTEN_ADDR: '[::]:14143',
    LINKERD2_PROXY_ADMIN_LISTEN_ADDR: '0.0.0.0:0',
    LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT: '100ms',
    LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT: ' 2s ',
    LINKERD2_PROXY_INBOUND_DETECT_TIMEOUT: '1m',
    LINKERD2_PROXY_OUTBOUND_DETECT_TIMEOUT: '0',
    LINKERD2_PROXY_INBOUND_HTTP_FAILFAST_TIMEOUT: '5s',
    LINKERD2_PROXY_OUTBOUND_HTTP_FAILFAST_TIMEOUT: '7s',
    LINKERD2_PROXY_OUTBOUND_TCP_FAILFAST_TIMEOUT: '9s',
    LINKERD2_PROXY_OUTBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT: '1h',
    LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: '3306, 8000-8100,,',
    LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD: '30s',
    LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED: 'true',
    LINKERD2_PROXY_LOG: 'warn,linkerd=debug,trust_dns=error,[{headers}]=off,[{request}]=off',
    LINKERD2_PROXY_LOG_FORMAT: 'JSON',
    LINKERD2_PROXY_INBOUND_HTTP1_CONNECTION_POOL_IDLE_TIMEOUT: '', // empty = unset
  });
  assert.deepEqual(c.outbound.listenAddr, { host: '127.0.0.1', port: 14140 });
  assert.deepEqual(c.inbound.listenAddr, { host: '::', port: 14143 });
  assert.deepEqual(c.adminListenAddr, { host: '0.0.0.0', port: 0 });
  assert.equal(c.inbound.connectTimeoutMs, 100);
  assert.equal(c.outbound.connectTimeoutMs, 2000);
  assert.equal(c.inbound.detectTimeoutMs, 60_000);
  assert.equal(c.outbound.detectTimeoutMs, 0);
  assert.equal(c.inbound.httpFailfastTimeoutMs, 5000);
  assert.equal(c.outbound.httpFailfastTimeoutMs, 7000);
  assert.equal(c.outbound.tcpFailfastTimeoutMs, 9000);
  assert.equal(c.outbound.http1PoolIdleTimeoutMs, 3_600_000);
  assert.equal(c.inbound.http1PoolIdleTimeoutMs, 3000);
  assert.deepEqual(c.opaquePorts, [{ lo: 3306, hi: 3306 }, { lo: 8000, hi: 8100 }]);
  assert.equal(isOpaquePort(c, 8050), true);
  assert.equal(isOpaquePort(c, 8101), false);
  assert.equal(isOpaquePort(c, 5432), false, 'a given list replaces the defaults');
  assert.equal(c.shutdownGracePeriodMs, 30_000);
  assert.equal(c.shutdownEndpointEnabled, true);
  assert.deepEqual(c.log, { logLevel: 'debug', logFormat: 'json' });
});

test('an empty opaque-port list means no opaque ports', () => {
  const c = parseProxyEnv({ LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION: '' });
  assert.deepEqual(c.opaquePorts, []);
  assert.equal(isOpaquePort(c, 3306), false);
});

test('durations follow Linkerd: integer + unit, bare 0, clamped to the timer limit', () => {
  assert.equal(parseDuration('300ms', 'X'), 300);
  assert.equal(parseDuration('2m', 'X'), 120_000);
  assert.equal(parseDuration('1d', 'X'), 86_400_000);
  assert.equal(parseDuration('0', 'X'), 0);
  assert.equal(parseDuration('365d', 'X'), MAX_DURATION_MS);
  for (const bad of ['1', '1.5s', '1 ms', '-1s', '12moons', 's', '']) {
    assert.throws(() => parseDuration(bad, 'X'), { code: 'BPFMESH_E_BAD_ENV' }, bad);
  }
});

test('the log filter maps to one pino level', () => {
  assert.equal(logLevelOfFilter('warn,linkerd=info'), 'info');
  assert.equal(logLevelOfFilter('error'), 'error');
  assert.equal(logLevelOfFilter('off'), 'silent');
  assert.equal(logLevelOfFilter('info,linkerd=warn'), 'warn', 'the linkerd level wins over the bare one');
  assert.equal(logLevelOfFilter('warn,linkerd=info,linkerd_proxy_http=trace'), 'trace', 'most verbose linkerd target');
  assert.equal(logLevelOfFilter('debug,hyper=trace'), 'debug', 'other targets are ignored');
  assert.equal(logLevelOfFilter('h2=debug'), 'warn');
  assert.equal(logLevelOfFilter('WARN,linkerd2_proxy=DEBUG'), 'debug');
  assert.equal(logLevelOfFilter('warn,linkerd[{x=a,b}]=trace'), 'warn', 'span filters are ignored, commas inside them too');
});

test('bad values name the variable and the expected form', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['LINKERD2_PROXY_INBOUND_LISTEN_ADDR', 'localhost:4143', /IP:PORT/],
    ['LINKERD2_PROXY_INBOUND_LISTEN_ADDR', '0.0.0.0:70000', /IP:PORT/],
    ['LINKERD2_PROXY_INBOUND_LISTEN_ADDR', '::1:4143', /IP:PORT/],
    ['LINKERD2_PROXY_INBOUND_LISTEN_ADDR', '[10.0.0.1]:4143', /IP:PORT/],
    ['LINKERD2_PROXY_ADMIN_LISTEN_ADDR', '127.0.0.1', /IP:PORT/],
    ['LINKERD2_PROXY_OUTBOUND_CONNECT_TIMEOUT', '5', /unit ms, s, m, h or d/],
    ['LINKERD2_PROXY_SHUTDOWN_GRACE_PERIOD', '2 minutes', /unit/],
    ['LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION', '25,http', /ports \(1-65535\) and ranges/],
    ['LINKERD2_PROXY_INBOUND_PORTS_DISABLE_PROTOCOL_DETECTION', '100-10', /ranges/],
    ['LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED', 'yes', /true or false/],
    ['LINKERD2_PROXY_LOG', 'warn,linkerd=loud', /levels trace, debug/],
    ['LINKERD2_PROXY_LOG', 'linkerd=', /levels/],
    ['LINKERD2_PROXY_LOG_FORMAT', 'xml', /plain or json/],
  ];
  for (const [name, value, expected] of cases) {
    assert.throws(
      () => parseProxyEnv({ [name]: value }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'BPFMESH_E_BAD_ENV', `${name}=${value}`);
        assert.ok(err.message.startsWith(`${name}: "${value}"`), err.message);
        assert.match(err.message, expected);
        return true;
      },
    );
  }
});

let anchorPem = '';
before(async () => {
  const keys = (await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']));
  const root = await x509.X509CertificateGenerator.createSelfSigned({ name: 'CN=root.linkerd.cluster.local', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } });
  anchorPem = root.toString('pem');
});

const LOCAL = 'default.emojivoto.serviceaccount.identity.linkerd.cluster.local';

test('no control-plane variables: no discovery, no identity', () => {
  const c = parseProxyEnv({});
  assert.equal(c.destination, undefined);
  assert.equal(c.identity, undefined);
});

test('the control-plane variables an injector writes', () => {
  const c = parseProxyEnv({
    LINKERD2_PROXY_DESTINATION_SVC_ADDR: 'linkerd-dst-headless.linkerd.svc.cluster.local.:8086',
    LINKERD2_PROXY_DESTINATION_SVC_NAME: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
    LINKERD2_PROXY_DESTINATION_CONTEXT: '{"ns":"emojivoto","nodeName":"node-1","pod":"web-0"}',
    LINKERD2_PROXY_IDENTITY_DIR: '/var/run/linkerd/identity/end-entity',
    LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: `${anchorPem}\n${anchorPem}`,
    LINKERD2_PROXY_IDENTITY_TOKEN_FILE: '/var/run/secrets/tokens/linkerd-identity-token',
    LINKERD2_PROXY_IDENTITY_SVC_ADDR: 'linkerd-identity-headless.linkerd.svc.cluster.local.:8080',
    LINKERD2_PROXY_IDENTITY_SVC_NAME: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
    LINKERD2_PROXY_IDENTITY_LOCAL_NAME: LOCAL,
  });
  assert.deepEqual(c.destination, {
    addr: { host: 'linkerd-dst-headless.linkerd.svc.cluster.local.', port: 8086 },
    name: 'linkerd-destination.linkerd.serviceaccount.identity.linkerd.cluster.local',
    loopback: false,
    contextToken: '{"ns":"emojivoto","nodeName":"node-1","pod":"web-0"}',
  });
  assert.ok(c.identity);
  assert.deepEqual(c.identity.svc, {
    addr: { host: 'linkerd-identity-headless.linkerd.svc.cluster.local.', port: 8080 },
    name: 'linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local',
    loopback: false,
  });
  assert.equal(c.identity.localName, LOCAL);
  assert.equal(c.identity.tokenFile, '/var/run/secrets/tokens/linkerd-identity-token');
  assert.equal(c.identity.dir, '/var/run/linkerd/identity/end-entity');
  assert.equal(c.identity.trustAnchorsPem.match(/BEGIN CERTIFICATE/g)?.length, 2);
});

test('a control plane on loopback is plaintext and needs no name', () => {
  const c = parseProxyEnv({
    LINKERD2_PROXY_DESTINATION_SVC_ADDR: 'localhost.:8086',
    LINKERD2_PROXY_IDENTITY_SVC_ADDR: '127.0.0.1:8080',
    LINKERD2_PROXY_IDENTITY_LOCAL_NAME: LOCAL,
    LINKERD2_PROXY_IDENTITY_TOKEN_FILE: '/t',
    LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: anchorPem,
  });
  assert.deepEqual(c.destination, { addr: { host: 'localhost.', port: 8086 }, name: undefined, loopback: true, contextToken: '' });
  assert.equal(c.identity?.svc.loopback, true);
  assert.equal(c.identity?.dir, undefined);
  assert.deepEqual(parseHostPort('[::1]:8086', 'X'), { host: '::1', port: 8086 });
});

test('identity disabled, or half-configured', () => {
  assert.equal(parseProxyEnv({ LINKERD2_PROXY_IDENTITY_DISABLED: 'disabled', LINKERD2_PROXY_IDENTITY_LOCAL_NAME: LOCAL }).identity, undefined);
  assert.throws(() => parseProxyEnv({ LINKERD2_PROXY_IDENTITY_LOCAL_NAME: LOCAL }), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'BPFMESH_E_BAD_ENV');
    assert.match(e.message, /LINKERD2_PROXY_IDENTITY_TOKEN_FILE, LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS, LINKERD2_PROXY_IDENTITY_SVC_ADDR must be set/);
    return true;
  });
});

test('bad control-plane values name the variable', () => {
  const identity = { LINKERD2_PROXY_IDENTITY_SVC_ADDR: '127.0.0.1:8080', LINKERD2_PROXY_IDENTITY_LOCAL_NAME: LOCAL, LINKERD2_PROXY_IDENTITY_TOKEN_FILE: '/t' };
  const cases: Array<[NodeJS.ProcessEnv, RegExp]> = [
    [{ LINKERD2_PROXY_DESTINATION_SVC_ADDR: 'linkerd-dst:http' }, /^LINKERD2_PROXY_DESTINATION_SVC_ADDR: .*HOST:PORT/],
    [{ LINKERD2_PROXY_DESTINATION_SVC_ADDR: 'bad_name:8086' }, /^LINKERD2_PROXY_DESTINATION_SVC_ADDR:/],
    [{ LINKERD2_PROXY_DESTINATION_SVC_ADDR: '10.0.0.1:0' }, /^LINKERD2_PROXY_DESTINATION_SVC_ADDR:/],
    [{ LINKERD2_PROXY_DESTINATION_SVC_ADDR: 'linkerd-dst.linkerd.svc:8086' }, /LINKERD2_PROXY_DESTINATION_SVC_NAME is required/],
    [{ LINKERD2_PROXY_DESTINATION_SVC_ADDR: '10.0.0.1:8086', LINKERD2_PROXY_DESTINATION_SVC_NAME: 'not a name' }, /^LINKERD2_PROXY_DESTINATION_SVC_NAME:/],
    [{ ...identity, LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: 'nope' }, /^LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: .*PEM certificates/],
    [{ ...identity, LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----' }, /^LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS:/],
    [{ ...identity, LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS: anchorPem, LINKERD2_PROXY_IDENTITY_LOCAL_NAME: 'web.' }, /^LINKERD2_PROXY_IDENTITY_LOCAL_NAME:/],
  ];
  for (const [env, re] of cases) {
    assert.throws(() => parseProxyEnv(env), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_BAD_ENV' && re.test(e.message), JSON.stringify(env));
  }
});

test('the hostile-peer limits: documented defaults, each read from its variable, bad values named', () => {
  assert.deepEqual(parseProxyEnv({}).limits, {
    requestHeadTimeoutMs: 10_000,
    requestBodyTimeoutMs: 60_000,
    responseHeadTimeoutMs: 60_000,
    httpIdleTimeoutMs: 60_000,
    tcpIdleTimeoutMs: 3_600_000,
    maxConnections: 4096,
    maxAuthorities: 256,
  });
  const l = parseProxyEnv({
    BPFMESH_PROXY_HTTP1_REQUEST_HEAD_TIMEOUT: '2s',
    BPFMESH_PROXY_HTTP1_REQUEST_BODY_TIMEOUT: '3s',
    BPFMESH_PROXY_HTTP1_RESPONSE_HEAD_TIMEOUT: '4s',
    BPFMESH_PROXY_HTTP_IDLE_TIMEOUT: '5s',
    BPFMESH_PROXY_TCP_IDLE_TIMEOUT: '6m',
    BPFMESH_PROXY_MAX_CONNECTIONS: '100',
    BPFMESH_PROXY_METRICS_MAX_AUTHORITIES: '7',
  }).limits;
  assert.deepEqual(l, { requestHeadTimeoutMs: 2000, requestBodyTimeoutMs: 3000, responseHeadTimeoutMs: 4000, httpIdleTimeoutMs: 5000, tcpIdleTimeoutMs: 360_000, maxConnections: 100, maxAuthorities: 7 });
  assert.equal(parseProxyEnv({ BPFMESH_PROXY_HTTP1_RESPONSE_HEAD_TIMEOUT: '0' }).limits.responseHeadTimeoutMs, 0);
  assert.throws(() => parseProxyEnv({ BPFMESH_PROXY_MAX_CONNECTIONS: 'many' }), /BPFMESH_PROXY_MAX_CONNECTIONS/);
  assert.throws(() => parseProxyEnv({ BPFMESH_PROXY_TCP_IDLE_TIMEOUT: '10' }), /BPFMESH_PROXY_TCP_IDLE_TIMEOUT/);
});
