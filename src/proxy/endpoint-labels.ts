// The metric labels of traffic to one endpoint: the connection's labels,
// plus what the route's endpoint says (Linkerd's outbound endpoint labels):
// tls="true" + server_id when the endpoint is reached over mTLS, else
// tls="no_identity" + no_tls_reason; its metric_labels as dst_* (bounded,
// metrics.ts dstLabels). Derived objects are cached per (connection labels,
// endpoint) so the metrics' per-object cache keeps hitting. Fields are
// set to undefined, never deleted (types.ts newConnLabels: one shape).
import { dstLabels } from './metrics.js';
import type { ConnLabels, Endpoint } from './types.js';

export type EndpointLabeler = (ep: Endpoint, base: ConnLabels) => ConnLabels;

/** `mtls`: the proxy has an identity, so endpoints with one are reached over mTLS. */
export function endpointLabeler(opts: { mtls: boolean }): EndpointLabeler {
  const cache = new WeakMap<ConnLabels, { plain: ConnLabels | undefined; byEp: WeakMap<Endpoint, ConnLabels> }>();
  const derive = (ep: Endpoint, base: ConnLabels): ConnLabels => {
    const out: ConnLabels = { ...base };
    if (opts.mtls) {
      out.client_id = undefined;
      out.sni = undefined;
      if (ep.identity !== undefined) {
        out.tls = 'true';
        out.server_id = ep.identity;
        out.no_tls_reason = undefined;
      } else {
        out.tls = 'no_identity';
        out.no_tls_reason = 'not_provided_by_service_discovery';
        out.server_id = undefined;
      }
    }
    const dst = dstLabels(ep.labels);
    out.dst = dst;
    return out;
  };
  return (ep, base) => {
    let c = cache.get(base);
    if (c === undefined) {
      c = { plain: undefined, byEp: new WeakMap() };
      cache.set(base, c);
    }
    // Endpoints without identity or labels (fallbacks: a new object per route) share one object.
    if (ep.identity === undefined && Object.keys(ep.labels).length === 0) return (c.plain ??= derive(ep, base));
    let l = c.byEp.get(ep);
    if (l === undefined) {
      l = derive(ep, base);
      c.byEp.set(ep, l);
    }
    return l;
  };
}
