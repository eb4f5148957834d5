import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseInitFlags, parseInspectFlags, parseResetFlags } from '../../src/config/pod-flags.js';
import { portRulesOf, settingsOf } from '../../src/intercept/rules.js';
import { Flags, ID_UNSET, RuleKind } from '../../src/bpf/codecs.js';

test('init defaults are proxy-init and Linkerd defaults', () => {
  const o = parseInitFlags([]);
  assert.equal(o.incomingProxyPort, 4143);
  assert.equal(o.outgoingProxyPort, 4140);
  assert.equal(o.adminPort, 4191);
  assert.equal(o.controlPort, 4190);
  assert.equal(o.proxyUid, 2102);
  assert.equal(o.proxyGid, undefined);
  assert.equal(o.failOpen, false);
  assert.equal(o.sockpath, true);
  const s = settingsOf(o);
  assert.equal(s.proxyGid, ID_UNSET);
  assert.equal(s.flags, Flags.SOCKPATH);
});

test('the flags an existing linkerd injector passes are accepted', () => {
  const o = parseInitFlags([
    '--incoming-proxy-port', '4143', '--outgoing-proxy-port', '4140', '--proxy-uid', '2102',
    '--inbound-ports-to-ignore', '4190,4191,4567,4568', '--outbound-ports-to-ignore', '443,6000-6010',
    '--subnets-to-ignore', '10.96.0.0/12,fd00::/8', '--firewall-bin-path', 'iptables-nft', '--ipv6=false',
    '--log-format', 'json', '--log-level', 'debug', '--simulate', '--ports-to-redirect', '8080',
  ]);
  assert.deepEqual(o.outboundPortsToIgnore, [{ lo: 443, hi: 443 }, { lo: 6000, hi: 6010 }]);
  assert.equal(o.subnetsToIgnore.length, 2);
  assert.deepEqual(o.ignoredFlags, ['firewall-bin-path', 'ipv6']);
  assert.equal(o.simulate, true);
  assert.equal(o.logFormat, 'json');
  assert.equal(settingsOf(o).flags & Flags.INBOUND_ONLY_LISTED, Flags.INBOUND_ONLY_LISTED);
  const rules = portRulesOf(o, 7n);
  const inbound = rules.filter((r) => r.kind === RuleKind.INBOUND_IGNORE).map((r) => r.port);
  assert.ok(inbound.includes(4190) && inbound.includes(4191), 'admin and control ports always skipped inbound');
});

test('bad flags give stable codes', () => {
  assert.throws(() => parseInitFlags(['--no-such-flag']), { code: 'BPFMESH_E_BAD_FLAG' });
  assert.throws(() => parseInitFlags(['--incoming-proxy-port', 'x']), { code: 'BPFMESH_E_BAD_PORT' });
  assert.throws(() => parseInitFlags(['--outbound-ports-to-ignore', '100-10']), { code: 'BPFMESH_E_BAD_PORT_RANGE' });
  assert.throws(() => parseInitFlags(['--subnets-to-ignore', '10.0.0.0/40']), { code: 'BPFMESH_E_BAD_CIDR' });
  assert.throws(() => parseInitFlags(['--proxy-uid', 'root']), { code: 'BPFMESH_E_BAD_FLAG' });
  assert.throws(() => parseInitFlags(['--log-format', 'xml']), { code: 'BPFMESH_E_BAD_FLAG' });
  assert.throws(() => parseInitFlags(['--pod-name', '../etc']), { code: 'BPFMESH_E_BAD_FLAG' });
  assert.throws(() => parseResetFlags(['--simulate']), { code: 'BPFMESH_E_BAD_FLAG' });
  assert.equal(parseInspectFlags(['--json']).json, true);
});

test('--sockpath-high-water: the socket path high mark, 2Mi by default, 64Ki to 1Gi', () => {
  assert.equal(parseInitFlags([]).sockpathHighWater, 2 << 20);
  assert.equal(settingsOf(parseInitFlags([])).sockpathHigh, 2 << 20);
  assert.equal(parseInitFlags(['--sockpath-high-water', '64Ki']).sockpathHighWater, 65536);
  assert.equal(parseInitFlags(['--sockpath-high-water', '16M']).sockpathHighWater, 16 << 20);
  assert.equal(parseInitFlags(['--sockpath-high-water', '1048576']).sockpathHighWater, 1 << 20);
  for (const bad of ['64K1', '1', '65535', '2Gi', '-1', '4 MiB', '']) {
    assert.throws(() => parseInitFlags(['--sockpath-high-water', bad]), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_BAD_FLAG' && e.message.includes('--sockpath-high-water'), bad);
  }
});
