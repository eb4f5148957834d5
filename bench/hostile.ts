// BENCH_ONLY=hostile: 2000 idle connections from a hostile client (they
// connect and send nothing) against the proxy's inbound listener with the
// connection cap at 1000; the proxy's RSS and open sockets with them held,
// against the idle proxy. The proxy runs in this process (the loopback chain
// of test/helpers/proxy-chain.ts), the client in a child process.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { startChain, sampleOf } from '../test/helpers/proxy-chain.js';

const HOSTILE = 2000;
const CAP = 1000;

const fds = (): number => readdirSync('/proc/self/fd').length;
const rssMb = (): number => process.memoryUsage().rss / 2 ** 20;

export interface HostileResult {
  connections: number;
  cap: number;
  idle: { rssMb: number; fds: number };
  held: { rssMb: number; fds: number; open: number; refused: number };
}

export async function runHostileBench(): Promise<HostileResult> {
  const chain = await startChain({ BPFMESH_PROXY_MAX_CONNECTIONS: String(CAP) });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const idle = { rssMb: rssMb(), fds: fds() };
    const script = `const net=require('net');const s=[];let n=0;for(let i=0;i<${HOSTILE};i++){const c=net.connect(${chain.inboundPort},'127.0.0.1');c.on('error',()=>{});c.on('connect',()=>{if(++n===${HOSTILE})console.log('connected')});c.on('close',()=>{if(++n===${HOSTILE})console.log('connected')});s.push(c)}setInterval(()=>{},1e9)`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      await new Promise<void>((resolve) => child.stdout.on('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 2000));
      const m = await chain.metrics();
      const held = { rssMb: rssMb(), fds: fds(), open: chain.proxy.openConnections, refused: sampleOf(m, 'bpfmesh_proxy_connections_refused_total') };
      const result = { connections: HOSTILE, cap: CAP, idle, held };
      process.stdout.write(
        `\n## hostile idle connections (${HOSTILE}, cap ${CAP})\n\n| | idle proxy | with them held |\n|---|---|---|\n` +
          `| RSS (MB) | ${idle.rssMb.toFixed(0)} | ${held.rssMb.toFixed(0)} |\n| open fds | ${idle.fds} | ${held.fds} |\n` +
          `| client connections held / refused | 0 / 0 | ${held.open} / ${held.refused} |\n`,
      );
      return result;
    } finally {
      child.kill('SIGKILL');
    }
  } finally {
    await chain.close();
  }
}
