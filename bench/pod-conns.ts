// Opens connections from inside each given pod netns (sockets made there,
// unmarked, so the pods' interception applies) to host:port, sends a line
// on each and waits for its echo, then holds them until killed. One process
// for all pods, so the load generator costs the same in both setups.
// Run it in a cgroup under the node-wide attach root. Prints "holding N".
//   node pod-conns.js <host> <port> <per-pod> <netns>...
import { openSync } from 'node:fs';
import { Socket } from 'node:net';
import { native } from '../src/bpf/native.js';

const [host = '', portArg = '0', perArg = '0', ...netns] = process.argv.slice(2);
const held: Socket[] = [];

function open(nsfd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = new Socket({ fd: native().socketInNetns(nsfd, 4, 0), readable: true, writable: true });
    s.connect({ host, port: Number(portArg) }, () => s.write('hello\n'));
    s.once('data', () => resolve());
    s.once('error', reject);
    held.push(s);
  });
}

async function main(): Promise<void> {
  const per = Number(perArg);
  for (const path of netns) {
    const fd = openSync(path, 'r');
    await Promise.all(Array.from({ length: per }, () => open(fd)));
  }
  process.stdout.write(`holding ${held.length}\n`);
  setInterval(() => {}, 1 << 30);
}
main().catch((err: unknown) => {
  process.stderr.write(String(err) + '\n');
  process.exit(1);
});
