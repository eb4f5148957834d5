// bpfmesh control-plane: a standalone Destination + Identity server for
// development, demos and tests (not a Kubernetes controller).
import { Registry } from 'prom-client';
import { startAdminServer, type AdminServer } from '../admin/server.js';
import { parseControlPlaneFlags } from '../config/control-plane-flags.js';
import { startControlPlane } from '../controlplane/server.js';
import { createLogger } from '../log/logger.js';
import { formatAddr } from '../util/addr.js';

export const usage = `bpfmesh control-plane --config mesh.yaml [--state-dir DIR] [--listen IP:PORT] [--identity-listen IP:PORT]
                      [--policy-listen IP:PORT]
                      [--admin-addr IP:PORT] [--log-level LEVEL] [--log-format plain|json]   a development control plane
  Serves Linkerd's Destination and Identity APIs from mesh.yaml, reloaded when it changes. On loopback
  (default 127.0.0.1:8086): plaintext, both on one port. Off loopback, as Linkerd's control plane: Destination
  over mTLS on "listen", Identity over TLS on "identityListen" (default: port 8080 of the same host), with
  server certificates for linkerd-destination/linkerd-identity.linkerd.serviceaccount.identity.linkerd.<trust domain>. Without identity.issuer it generates a trust anchor and an
  issuer in --state-dir (default ./.bpfmesh-cp); proxies read trust-anchors.pem from there. "policyListen"
  (none by default): the Destination server (policy API included) on a second port, same TLS, as Linkerd's
  linkerd-policy service on 8090.
`;

export async function run(argv: string[]): Promise<number> {
  const flags = parseControlPlaneFlags(argv);
  const log = createLogger(flags);
  const registry = new Registry();
  // Listened to before anything starts, so a signal during startup still stops us cleanly.
  const signalled = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const cp = await startControlPlane({
    configPath: flags.config,
    stateDir: flags.stateDir,
    log,
    registry,
    ...(flags.listen !== undefined ? { listen: flags.listen } : {}),
    ...(flags.identityListen !== undefined ? { identityListen: flags.identityListen } : {}),
    ...(flags.policyListen !== undefined ? { policyListen: flags.policyListen } : {}),
  });
  let admin: AdminServer | undefined;
  if (flags.adminAddr !== undefined) {
    admin = await startAdminServer({
      ...flags.adminAddr,
      registry,
      ready: () => true,
      shutdownEnabled: false,
      onShutdown: () => {},
      log: log.child({ component: 'admin' }),
    });
    log.info({ admin: formatAddr(admin.address) }, 'admin listening');
  }
  if (cp.trustAnchorsFile !== undefined) log.info({ trustAnchors: cp.trustAnchorsFile }, 'set LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS to this file\'s contents');
  log.info({ why: await signalled }, 'shutting down');
  await cp.close();
  await admin?.close();
  return 0;
}
