// The node agent's /metrics with the node proxy: the agent's own metrics,
// then every served pod's proxy metrics, each series labelled with its pod.
import { Registry } from 'prom-client';
/** What serves the pods' metrics: PodProxies or ProxyWorkers. */
interface PodMetricsSource {
  metrics(): Promise<Registry>;
}

export class NodeRegistry extends Registry {
  readonly #own: Registry;
  readonly #pods: PodMetricsSource;

  constructor(own: Registry, pods: PodMetricsSource) {
    super();
    this.#own = own;
    this.#pods = pods;
  }

  override async metrics(): Promise<string> {
    const pods = await this.#pods.metrics();
    return `${await this.#own.metrics()}\n${await pods.metrics()}`;
  }
}
