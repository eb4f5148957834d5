// The agent's Prometheus metrics, on its own Registry.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export interface NodeMetrics {
  registry: Registry;
  podsMeshed: Gauge;
  podsWaiting: Gauge;
  installs: Counter<'reason'>;
  withdrawals: Counter<'reason'>;
  failures: Counter<'reason'>;
  timeToIntercept: Histogram;
  kubeLists: Counter;
  kubeExpired: Counter;
  kubeErrors: Counter;
  kubeStalls: Counter;
  kubeThrottled: Counter;
}

export function createNodeMetrics(nodeName: string): NodeMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ node: nodeName });
  collectDefaultMetrics({ register: registry });
  const m = (cfg: { name: string; help: string }) => ({ ...cfg, registers: [registry] });
  return {
    registry,
    podsMeshed: new Gauge(m({ name: 'bpfmesh_node_pods_meshed', help: 'Pods of this node whose interception is in place' })),
    podsWaiting: new Gauge(m({ name: 'bpfmesh_node_pods_waiting', help: 'Meshed pods seen whose cgroup or process does not exist yet' })),
    installs: new Counter({ ...m({ name: 'bpfmesh_node_installs_total', help: 'Pod enrollments: new, updated (policy changed), moved (new netns), adopted (found pinned at start)' }), labelNames: ['reason'] }),
    withdrawals: new Counter({ ...m({ name: 'bpfmesh_node_withdrawals_total', help: 'Pods withdrawn: deleted, unmeshed (no longer annotated), completed, netns_gone, gone_while_down, bad_annotation' }), labelNames: ['reason'] }),
    failures: new Counter({ ...m({ name: 'bpfmesh_node_failures_total', help: 'Failures: bad_annotation, host_netns, enroll, withdraw, node_install' }), labelNames: ['reason'] }),
    timeToIntercept: new Histogram({
      ...m({ name: 'bpfmesh_node_time_to_interception_seconds', help: 'From the agent seeing a meshed pod to its interception in place' }),
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    }),
    kubeLists: new Counter(m({ name: 'bpfmesh_node_kube_lists_total', help: 'Pod lists from the Kubernetes API (the first, and relists)' })),
    kubeExpired: new Counter(m({ name: 'bpfmesh_node_kube_expired_total', help: 'Watches that ended with 410 Gone / Expired (followed by a relist)' })),
    kubeErrors: new Counter(m({ name: 'bpfmesh_node_kube_errors_total', help: 'Failed list or watch requests (retried with backoff)' })),
    kubeStalls: new Counter(m({ name: 'bpfmesh_node_kube_watch_stalls_total', help: 'Watches restarted after no event or bookmark for the stall timeout (also counted in kube_errors_total)' })),
    kubeThrottled: new Counter(m({ name: 'bpfmesh_node_kube_throttled_total', help: 'Retries delayed by the API server\'s Retry-After (429, or an ERROR event with retryAfterSeconds)' })),
  };
}
