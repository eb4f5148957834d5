// Pods of a KubeletNode wired to one bridge, as a CNI bridge plugin does,
// in a hub netns of their own (never the host's): pod n gets 10.79.<n/250>.<n%250+2>/16 on
// eth0, its veth peer in the hub. A pod's veth peer disappears from the hub
// only when the pod's netns is destroyed, which is how tests see that
// nothing holds a removed pod's namespace.
import { execFileSync } from 'node:child_process';
import type { KubeletNode, NodePod } from './kube-pods.js';

const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

export interface BridgedPod {
  pod: NodePod;
  ip: string;
  /** The veth end in the hub. */
  veth: string;
}

export class PodBridge {
  readonly hub: string;
  readonly #tag: string;
  #made = 0;

  constructor(node: KubeletNode) {
    this.hub = `${node.prefix}-hub`;
    this.#tag = node.prefix.slice(-6);
    sh('ip', ['netns', 'add', this.hub]);
    sh('ip', ['-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.hub, 'link', 'set', 'br0', 'up']);
  }

  attach(pod: NodePod): BridgedPod {
    const n = this.#made++;
    const veth = `${this.#tag}v${n}`;
    const ip = `10.79.${Math.floor(n / 250)}.${(n % 250) + 2}`;
    sh('ip', ['-n', this.hub, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netnsName]);
    sh('ip', ['-n', this.hub, 'link', 'set', veth, 'master', 'br0', 'up']);
    sh('ip', ['-n', pod.netnsName, 'addr', 'add', `${ip}/16`, 'dev', 'eth0']);
    sh('ip', ['-n', pod.netnsName, 'link', 'set', 'eth0', 'up']);
    return { pod, ip, veth };
  }

  vethExists(veth: string): boolean {
    return sh('ip', ['-n', this.hub, '-o', 'link', 'show']).includes(`${veth}@`);
  }

  cleanup(): void {
    try {
      execFileSync('ip', ['netns', 'delete', this.hub], { stdio: 'ignore' });
    } catch {
      /* already gone */
    }
  }
}
