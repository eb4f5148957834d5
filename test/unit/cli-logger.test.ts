// The CLI's light logger must write what pino (createLogger) writes, and
// `bpfmesh init` must not load the heavy modules other commands need.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/log/logger.js';
import { createCliLogger } from '../../src/log/cli-logger.js';
import type { LogFns } from '../../src/log/logger.js';
import type { LogOptions } from '../../src/config/pod-flags.js';

function linesOf(make: (fd: number) => void): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-log-'));
  try {
    const file = join(dir, 'out');
    const fd = openSync(file, 'w');
    make(fd);
    closeSync(fd);
    // The time differs between the two runs; everything else must match.
    return readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => l.replace(/"time":\d+/, '"time":T').replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z/, 'T'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// One error for both runs: its stack names where it was made.
const e = Object.assign(new Error('boom'), { code: 'BPFMESH_E_SYSCALL' });

function exercise(root: LogFns & { child(b: Record<string, unknown>): LogFns }): void {
  const log = root.child({ component: 'init' });
  log.info({ pod: 'p1', n: 3, list: [1, 'a'], nested: { a: true }, gone: undefined }, 'interception installed');
  log.debug({ program: 'mesh_connect4' }, 'hook in place');
  log.warn({ err: 'EPERM: operation not permitted', ms: Infinity }, 'install failed; removing what it made');
  log.info('message only "quoted"\nnext line');
  log.error({ only: 'fields' });
  log.trace({ hidden: 1 }, 'below the level');
  log.error({ err: e }, 'with an error');
  log.fatal(e);
}

for (const opts of [
  { logFormat: 'plain', logLevel: 'info' },
  { logFormat: 'json', logLevel: 'info' },
  { logFormat: 'json', logLevel: 'debug' },
  { logFormat: 'plain', logLevel: 'warn' },
  { logFormat: 'json', logLevel: 'silent' },
] as LogOptions[]) {
  test(`the CLI logger writes what pino writes (${opts.logFormat}, ${opts.logLevel})`, () => {
    const viaPino = linesOf((fd) => exercise(createLogger(opts, fd)));
    const viaCli = linesOf((fd) => exercise(createCliLogger(opts, fd)));
    assert.deepEqual(viaCli, viaPino);
    if (opts.logLevel !== 'silent') assert.ok(viaCli.length > 3, 'records were written');
  });
}

test('bpfmesh init loads no logger library, proxy, gRPC, metrics, YAML or X.509 code', () => {
  const initJs = join(__dirname, '..', '..', 'src', 'cli', 'init.js');
  const probe = `require(${JSON.stringify(initJs)}); process.stdout.write(JSON.stringify(Object.keys(require.cache)));`;
  const r = spawnSync(process.execPath, ['-e', probe], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const loaded = JSON.parse(r.stdout) as string[];
  assert.ok(loaded.some((p) => p.endsWith(join('intercept', 'install.js'))), 'the probe saw init load its own modules');
  const heavy = loaded.filter((p) => /node_modules[/\\](pino|@grpc|prom-client|yaml|@peculiar|pkijs|asn1js)[/\\]|[/\\]src[/\\](proxy|control|controlplane|tls)[/\\]/.test(p));
  assert.deepEqual(heavy, []);
});
