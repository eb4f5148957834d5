// A node proxy worker process (proxy-workers.ts): serves the pods the agent
// names, with its own listeners (SO_REUSEPORT) and sockets in each pod's
// netns, certifying each pod with the token file the agent keeps for it.
import { parseProxyEnv } from '../config/proxy-env.js';
import { createLogger } from '../log/logger.js';
import { PodProxies } from './pod-proxies.js';
import type { WorkerReply, WorkerRequest } from './proxy-workers.js';

function main(): void {
  const send = process.send?.bind(process);
  if (send === undefined) throw new Error('proxy-worker: run by the node agent (--proxy-workers), not directly');
  const base = parseProxyEnv(process.env);
  const log = createLogger({ logFormat: 'json', logLevel: (process.env['BPFMESH_WORKER_LOG_LEVEL'] ?? 'info') as 'info' }).child({ component: 'node-proxy-worker', pid: process.pid });
  const proxies = new PodProxies({ base, nodeName: process.env['NODE_NAME'] ?? '', log, tokenFileFor: (p) => Promise.resolve(p.tokenFile) });
  const reply = (r: WorkerReply): void => void send(r);
  process.on('message', (m: WorkerRequest) => {
    switch (m.op) {
      case 'serve':
        void proxies.serve(m.pod).then((ok) => reply({ id: m.id, ok }));
        break;
      case 'withdraw':
        void proxies.withdraw(m.uid, m.reason).then((ok) => reply({ id: m.id, ok }));
        break;
      case 'metrics':
        void proxies.metricsJson().then((metrics) => reply({ id: m.id, metrics: metrics.flat() }));
        break;
      case 'shutdown':
        void proxies.shutdown(m.graceMs).then(() => {
          reply({ id: m.id, ok: true });
          process.exit(0);
        });
        break;
    }
  });
  // The agent gone: nothing tells us to withdraw any more, so go (the pods' netns must not be kept).
  // SIGKILL, not process.exit(): exiting while V8 compiles in the background
  // can hang in Node 24's platform shutdown (nodejs/node#54918), and a worker
  // that hangs keeps its pods' listeners without an agent. Nobody is left to
  // read an exit code.
  process.once('disconnect', () => process.kill(process.pid, 'SIGKILL'));
}

main();
