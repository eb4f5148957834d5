// What a proxy that is not ours, and an app, see behind bpfmesh, in both
// install modes (per pod: `bpfmesh init`; node-wide: enrolment):
// - a proxy in Python (test/fixtures/orig-dst-proxy.py, uid 2102 from the
//   start) asks SO_ORIGINAL_DST on its inbound accepted sockets as well as
//   its outbound ones, as linkerd2-proxy and Envoy do, and relays;
// - an app's getpeername() on a redirected socket shows what it dialled,
//   getsockname() the true local address (kernel 5.8+ hooks);
// - an app dialling its own pod IP reaches its app directly (proxy-init's
//   `-o lo` rule), the proxy sees nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { kernelSkipReason } from '../helpers/root.js';
import { APP, MeshLab, PROXY, PodProcess, runCli, type RelayEvent } from '../helpers/mesh.js';
import { REPO_ROOT } from '../../src/config/paths.js';
import type { LabPod } from '../../src/lab/lab.js';
import { ensureBpffs } from '../../src/intercept/mounts.js';
import { parseInitFlags } from '../../src/config/pod-flags.js';
import { createLogger } from '../../src/log/logger.js';
import { enrollPod, ensureNodeInstall, uninstallNode, type NodeScope } from '../../src/intercept/node-wide.js';
import { inspectAll, type PodState } from '../../src/admin/inspect.js';
import { pinRoot } from '../../src/intercept/pod.js';

const skip = kernelSkipReason();
const FOREIGN_PROXY = join(REPO_ROOT, 'test', 'fixtures', 'orig-dst-proxy.py');
const log = createLogger({ logFormat: 'plain', logLevel: 'error' });

/** The app side: connect, then report what getpeername/getsockname say (and send nothing). */
const PEER_SCRIPT = `
import json, socket, sys
family = {"4": socket.AF_INET, "6": socket.AF_INET6}[sys.argv[1]]
s = socket.socket(family, socket.SOCK_STREAM)
s.settimeout(5)
s.connect((sys.argv[2], int(sys.argv[3])))
print(json.dumps({"peer": list(s.getpeername()[:2]), "sock": list(s.getsockname()[:2])}))
s.close()
`;

interface Names {
  peer: [string, number];
  sock: [string, number];
}

interface Mode {
  name: string;
  subnet: number;
  /** Intercepts a pod; called before its proxy starts. */
  setup(mesh: MeshLab, pod: LabPod): Promise<void>;
  inspect(pod: LabPod): PodState;
  /** `bpfmesh inspect` arguments for one pod. */
  inspectArgs(pod: LabPod): string[];
  teardown(): void;
}

function perPod(): Mode {
  return {
    name: 'per-pod install (bpfmesh init)',
    subnet: 93,
    setup: async (mesh, pod) => void (await mesh.init(pod)),
    inspect: (pod) => inspectAll(pinRoot('/sys/fs/bpf'), pod.netnsName)[0]!,
    inspectArgs: (pod) => ['inspect', '--pod-name', pod.netnsName],
    teardown: () => {},
  };
}

function nodeWide(): Mode {
  let scope: NodeScope | undefined;
  let bpffs: string | undefined;
  return {
    name: 'node-wide enrolment',
    subnet: 94,
    setup: async (mesh, pod) => {
      if (scope === undefined) {
        bpffs = mkdtempSync(join(tmpdir(), 'bpfmesh-foreign-'));
        ensureBpffs(bpffs, false);
        scope = { bpffs, bpffsExplicit: true, cgroupRoot: mesh.lab.cgroupRoot };
        ensureNodeInstall(scope, log);
      }
      enrollPod(scope, `pod-${pod.name}`, pod.netns, parseInitFlags(['--proxy-uid', String(PROXY.uid)]), log);
      await Promise.resolve();
    },
    inspect: (pod) => inspectAll(pinRoot(bpffs!), `node/pod-${pod.name}`)[0]!,
    inspectArgs: (pod) => ['inspect', '--pod-name', `node/pod-${pod.name}`, '--bpffs', bpffs!],
    teardown: () => {
      try {
        if (scope !== undefined) uninstallNode(scope, log);
      } finally {
        if (bpffs !== undefined) {
          execFileSync('umount', [bpffs]);
          rmdirSync(bpffs);
        }
      }
    },
  };
}

for (const mode of [perPod(), nodeWide()]) {
  describe(`a proxy not written in TypeScript, and what the app sees: ${mode.name}`, { skip, timeout: 120_000 }, () => {
    let mesh: MeshLab;
    let a: LabPod;
    let b: LabPod;
    let proxyA: PodProcess;
    let proxyB: PodProcess;

    async function foreignProxy(pod: LabPod): Promise<PodProcess> {
      const p = new PodProcess(mesh.lab.spawn(pod, 'python3', ['-u', FOREIGN_PROXY], PROXY));
      const ready = await p.waitFor((e) => e.event === 'listening');
      assert.equal((ready as RelayEvent & { uid?: number }).uid, PROXY.uid);
      return p;
    }

    async function names(pod: LabPod, family: 4 | 6, host: string, port: number): Promise<Names> {
      const r = await mesh.lab.exec(pod, 'python3', ['-c', PEER_SCRIPT, String(family), host, String(port)], APP);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as Names;
    }

    const seen = (p: PodProcess, direction: string, orig: string): Promise<RelayEvent> =>
      p.waitFor((e) => e.event === 'error' || (e.event === 'accept' && e.direction === direction && e.orig === orig)).then((e) => {
        assert.equal(e.event, 'accept', `${direction} ${orig}: ${JSON.stringify(e)}`);
        return e;
      });

    before(async () => {
      mesh = new MeshLab(mode.subnet);
      a = mesh.pod('a');
      b = mesh.pod('b');
      await mode.setup(mesh, a);
      await mode.setup(mesh, b);
      proxyA = await foreignProxy(a);
      proxyB = await foreignProxy(b);
      await mesh.responder(a, [7000]);
      await mesh.responder(b, [8080, 8081]);
    });
    after(() => {
      try {
        mesh?.cleanup();
      } finally {
        mode.teardown();
      }
    });

    test('IPv4: outbound and inbound both answered by SO_ORIGINAL_DST, the request relayed end to end', async () => {
      assert.equal(await mesh.curl(a, `http://${b.ip4}:8080/`), `direct ${b.ip4}:8080`);
      await seen(proxyA, 'outbound', `${b.ip4}:8080`);
      const inbound = await seen(proxyB, 'inbound', `${b.ip4}:8080`);
      assert.match(inbound.peer ?? '', new RegExp(`^${a.ip4.replace(/\./g, '\\.')}:`), "the peer is a's proxy");
    });

    test('IPv6: outbound and inbound both answered by SO_ORIGINAL_DST (SOL_IPV6)', async () => {
      assert.equal(await mesh.curl(a, `http://[${b.ip6}]:8080/`), `direct ${b.ip6}:8080`);
      await seen(proxyA, 'outbound', `[${b.ip6}]:8080`);
      await seen(proxyB, 'inbound', `[${b.ip6}]:8080`);
    });

    test("an app's getpeername() shows the address it dialled; getsockname() the true local one", async () => {
      const v4 = await names(a, 4, b.ip4, 8080);
      assert.deepEqual(v4.peer, [b.ip4, 8080]);
      assert.equal(v4.sock[0], '127.0.0.1');
      assert.notEqual(v4.sock[1], 4140);
      const v6 = await names(a, 6, b.ip6, 8080);
      assert.deepEqual(v6.peer, [b.ip6, 8080]);
      assert.equal(v6.sock[0], '::1');
      const mapped = await names(a, 6, `::ffff:${b.ip4}`, 8080);
      assert.deepEqual(mapped.peer, [`::ffff:${b.ip4}`, 8080], 'a dual-stack socket dialling IPv4');
      assert.equal(mapped.sock[0], '::ffff:127.0.0.1');
      // Not redirected (its own pod IP): the kernel's own answer, untouched.
      const direct = await names(a, 4, a.ip4, 7000);
      assert.deepEqual(direct.peer, [a.ip4, 7000]);
      assert.equal(direct.sock[0], a.ip4);
    });

    test('an app dialling its own pod IP reaches its app directly; the proxy sees nothing', async () => {
      const before = Number(mode.inspect(a).counters['out_pass_loopback']);
      assert.equal(await mesh.curl(a, `http://${a.ip4}:7000/`), `direct ${a.ip4}:7000`);
      assert.equal(await mesh.curl(a, `http://[${a.ip6}]:7000/`), `direct ${a.ip6}:7000`);
      // A marker through the proxy (connect only): its accept is printed after any earlier one.
      await names(a, 4, b.ip4, 8081);
      await seen(proxyA, 'outbound', `${b.ip4}:8081`);
      const own = proxyA.events.filter((e) => e.orig === `${a.ip4}:7000` || e.orig === `[${a.ip6}]:7000`);
      assert.deepEqual(own, [], 'no connection to the own pod IP went through the proxy');
      const state = mode.inspect(a);
      assert.ok(Number(state.counters['out_pass_loopback']) >= before + 2, JSON.stringify(state.counters));
      assert.ok(state.localAddresses.includes(a.ip4) && state.localAddresses.includes(a.ip6), JSON.stringify(state.localAddresses));
      assert.deepEqual(state.problems, []);
      assert.equal(state.hooks.length, 9);
    });

    test('inspect via the CLI shows the own IPs', async () => {
      const r = await runCli(mode.inspectArgs(a));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`own IPs +${a.ip4.replace(/\./g, '\\.')}`));
    });
  });
}
