// Host-and-port addresses: the one Addr type and its text form, shared by
// every layer (the proxy, mTLS, the control clients, the control plane).

export interface Addr {
  host: string;
  port: number;
}

/** "host:port", "[v6]:port". */
export const formatAddr = (a: Addr): string => (a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** An IPv4 peer of a dual-stack socket as Node reports it (::ffff:a.b.c.d) in its plain form (a.b.c.d). */
export const stripMapped = (a: string): string => (a.startsWith('::ffff:') ? a.slice(7) : a);
