// bpfmesh observe without a kernel: the struct obs_event codec against the
// layout in bpf/bpfmesh.h, what each event id means, the printed lines and
// the flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { endianness } from 'node:os';
import { AF_INET, AF_INET6, COUNTER_NAMES, ID_UNSET, obsEvent, type CounterName } from '../../src/bpf/codecs.js';
import { EVENT_MEANINGS, formatEvent, resolveEvent } from '../../src/observe/events.js';
import { parseObserveFlags } from '../../src/config/observe-flags.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import { parseIp } from '../../src/util/ip.js';

const LE = endianness() === 'LE';

/** A struct obs_event as the kernel lays it out (offsets from bpf/bpfmesh.h). */
function rawEvent(f: { ts: bigint; cookie: bigint; cgroup: bigint; sock: bigint; id: number; af: number; pid: number; uid: number; src: string; sport: number; dst: string; dport: number; comm: string }): Buffer {
  const b = Buffer.alloc(104);
  const w64 = (v: bigint, o: number): number => (LE ? b.writeBigUInt64LE(v, o) : b.writeBigUInt64BE(v, o));
  const w32 = (v: number, o: number): number => (LE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
  const w16 = (v: number, o: number): number => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
  w64(f.ts, 0);
  w64(f.cookie, 8);
  w64(f.cgroup, 16);
  w64(f.sock, 24);
  w32(f.id, 32);
  w32(f.af, 36);
  w32(f.pid, 40);
  w32(f.uid, 44);
  if (f.src) parseIp(f.src)!.bytes.copy(b, 48);
  if (f.dst) parseIp(f.dst)!.bytes.copy(b, 64);
  w16(f.sport, 80);
  w16(f.dport, 82);
  b.write(f.comm, 88, 'latin1');
  return b;
}

const id = (name: CounterName): number => COUNTER_NAMES.indexOf(name);

test('struct obs_event decodes field by field (IPv4, a task, a socket cookie)', () => {
  const e = obsEvent.decode(
    rawEvent({ ts: 123_456_789n, cookie: 4097n, cgroup: 77n, sock: 9n, id: id('out_redirected'), af: AF_INET, pid: 4242, uid: 1000, src: '', sport: 0, dst: '10.0.3.7', dport: 8080, comm: 'curl' }),
  );
  assert.deepEqual(e, {
    tsNs: 123_456_789n, netnsCookie: 4097n, cgroupId: 77n, sockCookie: 9n, event: id('out_redirected'), family: 4, pid: 4242, uid: 1000,
    srcAddress: '0.0.0.0', srcPort: 0, dstAddress: '10.0.3.7', dstPort: 8080, comm: 'curl',
  });
});

test('obs_event is 104 bytes in bpf/bpfmesh.h, as the codec says', () => {
  const h = readFileSync(join(REPO_ROOT, 'bpf', 'bpfmesh.h'), 'utf8');
  const body = /struct obs_event \{([\s\S]*?)\};/.exec(h)?.[1] ?? '';
  const sizes: Record<string, number> = { __u64: 8, __u32: 4, __u16: 2, char: 1 };
  let size = 0;
  for (const m of body.matchAll(/^\s*(__u64|__u32|__u16|char)\s+\w+(?:\[(\d+)\])?;/gm)) size += sizes[m[1]!]! * Number(m[2] ?? 1);
  assert.equal(size, obsEvent.size);
});

test('an inbound event: peer as source, no process, no cookie; IPv6 formatted with brackets', () => {
  const raw = rawEvent({ ts: 0n, cookie: 5n, cgroup: 0n, sock: 0n, id: id('in_steered'), af: AF_INET6, pid: 0, uid: ID_UNSET, src: 'fd77::3', sport: 40000, dst: 'fd77::2', dport: 8080, comm: '' });
  const ev = resolveEvent(obsEvent.decode(raw), 'web', 1_700_000_000_000_000_000n);
  assert.equal(ev.time, '2023-11-14T22:13:20.000Z');
  assert.equal(ev.direction, 'inbound');
  assert.equal(ev.verdict, 'STEERED');
  assert.equal(ev.process, null);
  assert.equal(ev.socketCookie, null);
  assert.deepEqual(ev.src, { address: 'fd77::3', port: 40000 });
  assert.equal(formatEvent(ev), '22:13:20.000  web  inbound   STEERED     to-proxy         [fd77::3]:40000 -> [fd77::2]:8080');
});

test('an outbound connect has no source yet: the process stands in for it', () => {
  const raw = rawEvent({ ts: 1_000_000n, cookie: 5n, cgroup: 3n, sock: 11n, id: id('out_pass_port'), af: AF_INET, pid: 31, uid: 1000, src: '', sport: 0, dst: '10.0.0.9', dport: 443, comm: 'curl' });
  const ev = resolveEvent(obsEvent.decode(raw), 'app', 0n);
  assert.equal(ev.src, null);
  assert.deepEqual(ev.process, { pid: 31, uid: 1000, comm: 'curl', cgroupId: '3' });
  assert.equal(formatEvent(ev), '00:00:00.001  app  outbound  PASSED      ignored-port     curl[31] -> 10.0.0.9:443  (curl[31] uid 1000)');
  assert.equal((JSON.parse(JSON.stringify(ev)) as { reason: string }).reason, 'ignored-port');
});

test('an id this build does not know is shown as such, not dropped', () => {
  const ev = resolveEvent(obsEvent.decode(rawEvent({ ts: 0n, cookie: 1n, cgroup: 0n, sock: 0n, id: 999, af: 0, pid: 0, uid: ID_UNSET, src: '', sport: 0, dst: '', dport: 0, comm: '' })), 'p', 0n);
  assert.equal(ev.event, 'unknown(999)');
  assert.equal(ev.direction, 'unknown');
  assert.equal(ev.dst, null);
});

test('every counter a BPF program emits an event for has a meaning, and only those', () => {
  const src = ['intercept.bpf.c', 'inbound.bpf.c'].map((f) => readFileSync(join(REPO_ROOT, 'bpf', f), 'utf8')).join('\n');
  // Events carry the counter id counted at the same place: the ids the programs count are the candidates.
  const counted = new Set([...src.matchAll(/BPFMESH_C_([A-Z_]+)/g)].map((m) => m[1]!.toLowerCase()));
  const perMessage = new Set(['sockpath_redirected', 'sockpath_passed', 'sockpath_trimmed', 'sockpath_trim_failed']);
  for (const name of counted) {
    if (perMessage.has(name)) assert.equal(EVENT_MEANINGS[name as CounterName], undefined, `${name} is per message/skb: no event`);
    else assert.ok(EVENT_MEANINGS[name as CounterName], `${name} has no meaning in src/observe/events.ts`);
  }
});

test('flags: --pod or --cgroup, --limit and --duration bounded, --follow without --duration', () => {
  assert.deepEqual(parseObserveFlags(['--pod', 'web', '--follow', '--json', '--limit', '5']), {
    bpffs: '/sys/fs/bpf', pod: 'web', cgroup: undefined, follow: true, json: true, limit: 5, durationMs: 2000,
  });
  assert.equal(parseObserveFlags(['--pod-name', 'x', '--duration', '10']).durationMs, 10_000);
  for (const bad of [['--pod', 'a', '--cgroup', '/x'], ['--limit', '0'], ['--limit', 'many'], ['--duration', '-1'], ['--follow', '--duration', '3'], ['--nope']]) {
    assert.throws(() => parseObserveFlags(bad), (e: Error & { code?: string }) => e.code === 'BPFMESH_E_BAD_FLAG', bad.join(' '));
  }
});
