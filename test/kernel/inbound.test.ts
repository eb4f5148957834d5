// Inbound steering with sk_lookup: no NAT, the proxy's listener registered
// by the sockops program when it listens, ignored ports straight to the app.
// Kernel floor: 5.9 (sk_lookup), 5.15 for bpf_get_netns_cookie in sockops.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { kernelSkipReason } from '../helpers/root.js';
import { MeshLab, PROXY, type PodProcess } from '../helpers/mesh.js';
import type { LabPod } from '../../src/lab/lab.js';
import { inspectPod } from '../../src/admin/inspect.js';

const skip = kernelSkipReason();

describe('inbound steering', { skip, timeout: 120_000 }, () => {
  let mesh: MeshLab;
  let client: LabPod;
  let server: LabPod;
  let listed: LabPod;
  let proxy: PodProcess;

  before(async () => {
    mesh = new MeshLab(82);
    client = mesh.pod('client');
    server = mesh.pod('server');
    listed = mesh.pod('listed');
    await mesh.init(server, ['--inbound-ports-to-ignore', '5000,5100-5199']);
    await mesh.init(listed, ['--ports-to-redirect', '8080']);
    proxy = await mesh.relay(server, 'report');
    await mesh.relay(listed, 'report');
    await mesh.responder(server, [5000, 5150, 8080]);
    await mesh.responder(server, [4190, 4191], PROXY); // the proxy's own control/admin ports
    await mesh.responder(listed, [8080, 8081]);
  });
  after(() => mesh?.cleanup());

  test('a connection to the pod on any port reaches the proxy with the true local address (IPv4)', async () => {
    assert.equal(await mesh.curl(client, `http://${server.ip4}:8080/`), `inbound local=${server.ip4}:8080`);
    assert.equal(await mesh.nc(client, server.ip4, 31337), `inbound local=${server.ip4}:31337`, 'a port nothing listens on');
    const ev = await proxy.waitFor((e) => e.direction === 'inbound' && e.orig === `${server.ip4}:31337`);
    assert.match(ev.peer ?? '', new RegExp(`^${client.ip4.replace(/\./g, '\\.')}:`), 'the peer is the client pod, not rewritten');
  });

  test('IPv6 connections are steered to the dual-stack listener', async () => {
    assert.equal(await mesh.curl(client, `http://[${server.ip6}]:8080/`), `inbound local=[${server.ip6}]:8080`);
  });

  test('ignored ports reach the app directly: 4190/4191 always, configured ports and ranges', async () => {
    for (const port of [4190, 4191, 5000, 5150]) {
      assert.equal(await mesh.curl(client, `http://${server.ip4}:${port}/`), `direct ${server.ip4}:${port}`, `port ${port}`);
    }
  });

  test('--ports-to-redirect steers only the listed ports', async () => {
    assert.equal(await mesh.curl(client, `http://${listed.ip4}:8080/`), `inbound local=${listed.ip4}:8080`);
    assert.equal(await mesh.curl(client, `http://${listed.ip4}:8081/`), `direct ${listed.ip4}:8081`);
  });

  test('the listener registered itself; counters say what happened', () => {
    const state = inspectPod(mesh.pinDir(server), server.netnsName);
    assert.deepEqual(state.listeners, [{ family: 'ipv4', registered: true }, { family: 'ipv6', registered: true }]);
    assert.ok(Number(state.counters['in_steered']) >= 3, JSON.stringify(state.counters));
    assert.ok(Number(state.counters['in_pass_port']) >= 4);
    assert.ok(Number(state.counters['listener_registered']) >= 2);
  });
});
