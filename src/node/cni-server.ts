// The node agent's end of the CNI fast path: bin/bpfmesh-cni hands each call
// to a running agent over a unix socket (native/cni-forward.c), which runs the
// same plugin code (src/cni/plugin.ts) in this long-lived process instead of
// a new Node.js process per call. Only root may connect (0600).
import { chmodSync, mkdirSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { runCni, type CniDeps } from '../cni/plugin.js';
import type { Logger } from '../log/logger.js';

const MAGIC = 'BPFMESH-CNI 1\n';
/** A request over this (CNI_* variables plus the configuration) is refused. */
const MAX_REQUEST = (1 << 20) + (64 << 10);

/** Parses a forwarded call; null when it is not one. */
export function parseCniRequest(buf: Buffer): { env: NodeJS.ProcessEnv; stdin: string } | null {
  if (buf.subarray(0, MAGIC.length).toString('latin1') !== MAGIC) return null;
  const env: NodeJS.ProcessEnv = {};
  let at = MAGIC.length;
  for (;;) {
    const end = buf.indexOf(0, at);
    if (end < 0) return null;
    if (end === at) return { env, stdin: buf.subarray(end + 1).toString('utf8') };
    const entry = buf.subarray(at, end).toString('utf8');
    const eq = entry.indexOf('=');
    if (eq <= 0 || !entry.startsWith('CNI_')) return null;
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
    at = end + 1;
  }
}

export interface CniServer {
  readonly path: string;
  close(): Promise<void>;
}

export async function startCniServer(path: string, deps: CniDeps, log: Logger): Promise<CniServer> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Bound under a name of its own, then renamed over the path: a new agent (a rolling update) takes the path
  // from the old one at once, and the old one's close (libuv unlinks the name it bound) cannot remove the new socket.
  const bound = `${path}.${process.pid}.tmp`;
  try {
    unlinkSync(bound); // left by a process of this pid that died
  } catch {
    /* none */
  }
  const serve = (sock: Socket): void => {
    const parts: Buffer[] = [];
    let size = 0;
    sock.on('error', () => sock.destroy());
    sock.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_REQUEST) return void sock.destroy();
      parts.push(d);
    });
    sock.once('end', () => {
      const req = parseCniRequest(Buffer.concat(parts));
      if (req === null) {
        log.warn({ bytes: size }, 'CNI socket: not a forwarded CNI call; closed');
        return void sock.destroy();
      }
      const t0 = performance.now();
      void runCni(req.env, req.stdin, deps).then((out) => {
        log.debug({ command: req.env['CNI_COMMAND'], containerId: req.env['CNI_CONTAINERID'], exitCode: out.exitCode, ms: Math.round((performance.now() - t0) * 10) / 10 }, 'CNI call served by the agent');
        if (out.error !== undefined) log.warn({ command: req.env['CNI_COMMAND'], code: out.error.code, err: out.error.message }, 'CNI call failed');
        sock.end(`${out.exitCode}\n${out.stdout}`);
      });
    });
  };
  // Half-open: the plugin shuts its write side to end the request, and still reads the answer.
  const server: Server = createServer({ allowHalfOpen: true }, serve);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(bound, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(bound, 0o600);
  renameSync(bound, path);
  const ino = statSync(path).ino;
  log.info({ path }, 'serving CNI calls on a unix socket');
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        // Ours still (no newer agent renamed its socket over it): remove it, so the plugin falls back at once.
        try {
          if (statSync(path).ino === ino) unlinkSync(path);
        } catch {
          /* gone */
        }
        server.close(() => resolve());
      }),
  };
}
