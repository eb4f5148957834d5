// Opens N TCP connections to host:port, sends a line on each and waits for
// its echo, then holds them open until killed. Prints "holding N".
//   node hold-conns.js <host> <port> <n>
import { connect, type Socket } from 'node:net';

const [host = '', portArg = '0', nArg = '0'] = process.argv.slice(2);
const socks: Socket[] = [];

function open(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = connect({ host, port: Number(portArg) }, () => s.write('hello\n'));
    s.once('data', () => resolve());
    s.once('error', reject);
    socks.push(s);
  });
}

async function main(): Promise<void> {
  const n = Number(nArg);
  for (let i = 0; i < n; i += 100) await Promise.all(Array.from({ length: Math.min(100, n - i) }, open));
  process.stdout.write(`holding ${socks.length}\n`);
  setInterval(() => {}, 1 << 30);
}
main().catch((err: unknown) => {
  process.stderr.write(String(err) + '\n');
  process.exit(1);
});
