// A TCP port inside a test network namespace that reaches a server of this
// process on 127.0.0.1, through a unix socket (which crosses namespaces):
// a child in the namespace listens and pipes each connection to the socket,
// where this process pipes it on to the server. Bytes pass untouched (TLS is
// end to end). So a lab pod reaches the fake Kubernetes API or the test
// control plane at an address of its own network, without any traffic
// leaving loopback or the lab's namespaces.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const IN_NETNS = `const net = require('net');
const [path, host, port] = process.argv.slice(1);
net.createServer((c) => {
  const s = net.connect(path);
  c.on('error', () => s.destroy());
  s.on('error', () => c.destroy());
  c.pipe(s).pipe(c);
}).listen(Number(port), host, () => console.log('ready'));`;

function pipeBoth(a: Socket, b: Socket): void {
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.pipe(b).pipe(a);
}

export class NetnsRelay {
  readonly child: ChildProcess;
  readonly #server: Server;
  readonly #dir: string;
  readonly #conns: Set<Socket>;

  private constructor(child: ChildProcess, server: Server, dir: string, conns: Set<Socket>) {
    this.child = child;
    this.#server = server;
    this.#dir = dir;
    this.#conns = conns;
  }

  /** Listens on host:port inside netnsPath; each connection goes to 127.0.0.1:targetPort here. */
  static async start(netnsPath: string, host: string, port: number, targetPort: number): Promise<NetnsRelay> {
    const dir = mkdtempSync(join(tmpdir(), 'bpfmesh-relay-'));
    const path = join(dir, 's');
    const conns = new Set<Socket>();
    const server = createServer((c) => {
      conns.add(c);
      c.once('close', () => conns.delete(c));
      pipeBoth(c, createConnection(targetPort, '127.0.0.1'));
    });
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const child = spawn('nsenter', [`--net=${netnsPath}`, '--', process.execPath, '-e', IN_NETNS, path, host, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const relay = new NetnsRelay(child, server, dir, conns);
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`relay into ${netnsPath} exited ${code}: ${err}`)));
    }).catch(async (e: unknown) => {
      await relay.close();
      throw e;
    });
    return relay;
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const gone = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGKILL');
      await gone;
    }
    for (const c of this.#conns) c.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
