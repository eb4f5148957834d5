// The node agent's /metrics with the node proxy: the agent's own metrics,
// then every served pod's proxy metrics, each series labelled with its pod.
import { Registry } from 'prom-client';
import type { PodProxies } from './pod-proxies.js';

export class NodeRegistry extends Registry {
  readonly #own: Registry;
  readonly #pods: PodProxies;

  constructor(own: Registry, pods: PodProxies) {
    super();
    this.#own = own;
    this.#pods = pods;
  }

  override async metrics(): Promise<string> {
    const pods = await this.#pods.metrics();
    return `${await this.#own.metrics()}\n${await pods.metrics()}`;
  }
}
