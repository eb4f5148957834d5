// The development control plane in-process on 127.0.0.1:0, from a YAML
// written to a temporary directory, for control-plane client tests.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { startControlPlane, type ControlPlane, type ControlPlaneOptions } from '../../src/controlplane/server.js';
import type { CertifyEvent } from '../../src/controlplane/identity-service.js';
import type { Addr } from '../../src/proxy/types.js';

export const silent = pino({ level: process.env['TEST_LOG'] ?? 'silent' });

export interface TestControlPlane {
  cp: ControlPlane;
  registry: Registry;
  dir: string;
  configPath: string;
  certifies: CertifyEvent[];
  /** Replaces mesh.yaml the way editors do (write + rename): the watcher must see it. */
  write(yaml: string): void;
  /** Stops the server (streams cut) and starts a new one on the same port and files. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** Stops and removes the temporary directory. */
  cleanup(): Promise<void>;
}

/** Sums a metric's samples whose labels include `labels`. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (m === undefined) return 0;
  const { values } = await m.get();
  return values
    .filter((v) => Object.entries(labels).every(([k, val]) => (v.labels as Record<string, unknown>)[k] === val))
    .reduce((a, v) => a + v.value, 0);
}

/** `extra`: serverTls, serverNames, identityListen... (a tampered control plane for failure tests). */
export async function startTestControlPlane(
  yaml: string,
  listen: Addr = { host: '127.0.0.1', port: 0 },
  extra: Partial<Pick<ControlPlaneOptions, 'serverTls' | 'serverNames' | 'identityListen' | 'policyListen' | 'stateDir'>> = {},
): Promise<TestControlPlane> {
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-cp-'));
  const configPath = join(dir, 'mesh.yaml');
  writeFileSync(configPath, yaml);
  const certifies: CertifyEvent[] = [];
  const start = async (at: Addr): Promise<{ cp: ControlPlane; registry: Registry }> => {
    const registry = new Registry();
    const cp = await startControlPlane({
      configPath,
      stateDir: join(dir, 'state'),
      log: silent,
      ...extra,
      registry,
      listen: at,
      reloadDebounceMs: 50,
      onCertify: (e) => certifies.push(e),
    });
    return { cp, registry };
  };
  let running: ControlPlane | undefined;
  const t: TestControlPlane = {
    ...(await start(listen)),
    dir,
    configPath,
    certifies,
    write(text) {
      const tmp = `${configPath}.tmp`;
      writeFileSync(tmp, text);
      renameSync(tmp, configPath);
    },
    async restart() {
      const port = t.cp.address.port;
      await t.stop();
      Object.assign(t, await start({ host: '127.0.0.1', port }));
      running = t.cp;
    },
    async stop() {
      await running?.close();
      running = undefined;
    },
    async cleanup() {
      await t.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  running = t.cp;
  return t;
}

/** Resolves when `check` holds, polling every 10 ms; rejects after timeoutMs with `what`. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<number> {
  const start = Date.now();
  for (;;) {
    if (await check()) return Date.now() - start;
    if (Date.now() - start > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
