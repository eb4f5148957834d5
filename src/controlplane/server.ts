// `bpfmesh control-plane`: a standalone Destination + Identity gRPC server,
// for development, demos and tests. Answers from mesh.yaml, which is
// watched: a change is sent to open Get streams as Add/Remove diffs, and a
// file that does not parse is logged while the old configuration stays.
// On loopback it speaks plaintext, Identity and Destination on one port.
// Off loopback it serves as Linkerd's control plane does (server-tls.ts):
// Identity over TLS on its own port (identityListen, default 8080),
// Destination over mTLS on `listen`, with server certificates for the
// services' identities from its own issuer.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import { destinationService, identityService, inboundPolicyService } from '../control/protos.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { formatAddr, type Addr } from '../util/addr.js';
import { loadIssuer } from './ca.js';
import { DestinationService } from './destination-service.js';
import { IdentityService, type CertifyEvent } from './identity-service.js';
import { parseMeshConfig, type MeshConfig } from './mesh-config.js';
import { defaultServerNames, startServerTls, type ServerNames, type ServerTls } from './server-tls.js';
import { isLoopbackHost } from '../config/proxy-env.js';
import { PolicyService } from './policy-service.js';

export interface ControlPlaneOptions {
  configPath: string;
  /** Where a generated trust anchor and issuer live (default of the CLI: ./.bpfmesh-cp). */
  stateDir: string;
  log: Logger;
  registry: Registry;
  /** Overrides mesh.yaml's `listen` (tests use 127.0.0.1:0). */
  listen?: Addr;
  /** Overrides mesh.yaml's `identityListen`. */
  identityListen?: Addr;
  /** Overrides mesh.yaml's `policyListen`. */
  policyListen?: Addr;
  /**
   * 'auto' (default): TLS off loopback, plaintext on loopback. For tests only:
   * 'plaintext' serves without TLS even off loopback (proxies must refuse it);
   * 'tls' serves TLS even on loopback (Identity on its own port, default an ephemeral one).
   */
  serverTls?: 'auto' | 'plaintext' | 'tls';
  /** Overrides the server certificates' names (tests of proxies refusing another name). */
  serverNames?: Partial<ServerNames>;
  /** Default true: reload mesh.yaml when it changes. */
  watch?: boolean;
  /** Coalesces the several events one save makes; default 100 ms. */
  reloadDebounceMs?: number;
  /** Every Certify, after it is answered (tests, audit). */
  onCertify?: (e: CertifyEvent) => void;
}

export interface ControlPlane {
  /** Destination (and policy). */
  readonly address: Addr;
  /** Identity: the same as `address` when both share the loopback port. */
  readonly identityAddress: Addr;
  /** The Destination server's second port, for the policy API (Linkerd's 8090); undefined without policyListen. */
  readonly policyAddress: Addr | undefined;
  /** The identities the server certificates carry (what …_SVC_NAME must say). */
  readonly serverNames: ServerNames;
  /** Per port: TLS (Identity) / mTLS (Destination), or plaintext. */
  readonly secure: { identity: boolean; destination: boolean };
  readonly trustAnchorsPem: string;
  /** The file proxies read their trust anchors from, when known. */
  readonly trustAnchorsFile: string | undefined;
  readonly config: MeshConfig;
  /** Re-reads mesh.yaml now; false (and the old configuration kept) when it is bad. */
  reload(): Promise<boolean>;
  /** Stops at once: open streams are cut, as when the process dies. */
  close(): Promise<void>;
}

async function readConfig(path: string): Promise<{ text: string; config: MeshConfig }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new BpfmeshError(ErrorCodes.CONTROL_PLANE_CONFIG, `cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  return { text, config: parseMeshConfig(text, path, dirname(path)) };
}

function bind(server: grpc.Server, addr: Addr, credentials: grpc.ServerCredentials): Promise<number> {
  return new Promise((ok, fail) =>
    server.bindAsync(formatAddr(addr), credentials, (err, port) => {
      if (err === null) ok(port);
      else fail(new BpfmeshError(ErrorCodes.LISTEN, `control plane cannot listen on ${formatAddr(addr)}: ${err.message}`, { cause: err }));
    }),
  );
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const log = opts.log.child({ component: 'control-plane' });
  const configPath = resolve(opts.configPath);
  let { text: lastText, config } = await readConfig(configPath);
  const issuer = await loadIssuer({
    source: { ...config.identity.issuer, ...(config.identity.trustAnchorsFile !== undefined ? { trustAnchorsFile: config.identity.trustAnchorsFile } : {}) },
    stateDir: opts.stateDir,
    trustDomain: config.trustDomain,
    log,
  });

  const requests = new Counter({
    name: 'bpfmesh_controlplane_requests_total',
    help: 'Requests to the development control plane, by RPC and result (a gRPC status name).',
    labelNames: ['rpc', 'result'] as const,
    registers: [opts.registry],
  });
  const reloads = new Counter({
    name: 'bpfmesh_controlplane_reloads_total',
    help: 'Reloads of mesh.yaml, by result (ok, error).',
    labelNames: ['result'] as const,
    registers: [opts.registry],
  });
  const count = (rpc: string, result: string): void => requests.inc({ rpc, result });
  const destination = new DestinationService(config, log.child({ component: 'destination' }), { count });
  const identity = new IdentityService(config, issuer, log.child({ component: 'identity' }), {
    count,
    ...(opts.onCertify !== undefined ? { onCertify: opts.onCertify } : {}),
  });
  const policy = new PolicyService(config, log.child({ component: 'policy' }), { count });
  new Gauge({
    name: 'bpfmesh_controlplane_streams',
    help: 'Open Get, GetProfile and WatchPort streams.',
    registers: [opts.registry],
    collect() {
      this.set(destination.streams + policy.streams);
    },
  });

  const listen = opts.listen ?? config.listen;
  const tlsMode = opts.serverTls ?? 'auto';
  // Identity shares the Destination port only when both are plaintext on loopback.
  const tlsOn = (a: Addr): boolean => tlsMode === 'tls' || (tlsMode === 'auto' && !isLoopbackHost(a.host));
  const identityListen =
    opts.identityListen ?? config.identityListen ?? (tlsOn(listen) ? { host: listen.host, port: tlsMode === 'tls' ? 0 : 8080 } : isLoopbackHost(listen.host) ? undefined : { host: listen.host, port: 8080 });
  const policyListen = opts.policyListen ?? config.policyListen;
  const secure = { destination: tlsOn(listen), identity: identityListen !== undefined && tlsOn(identityListen) };
  const policyTls = policyListen !== undefined && tlsOn(policyListen);
  const serverNames = { ...defaultServerNames(config.trustDomain), ...opts.serverNames };
  let serverTls: ServerTls | undefined;
  if (secure.destination || secure.identity || policyTls) {
    serverTls = await startServerTls({ issuer, names: serverNames, lifetimeMs: () => config.identity.leafLifetimeMs, log });
  }
  const insecure = grpc.ServerCredentials.createInsecure();
  // The Destination server: the policy API is served here too (mTLS, as Linkerd's destination pod serves both).
  const server = new grpc.Server();
  server.addService(destinationService(), destination.handlers);
  const servers = [server];
  let identityServer = server;
  if (identityListen !== undefined) {
    identityServer = new grpc.Server();
    servers.push(identityServer);
  }
  identityServer.addService(identityService(), identity.handlers);
  server.addService(inboundPolicyService(), policy.handlers);
  let address: Addr;
  let identityAddress: Addr;
  let policyAddress: Addr | undefined;
  try {
    address = { host: listen.host, port: await bind(server, listen, secure.destination ? serverTls!.destination : insecure) };
    identityAddress =
      identityListen === undefined ? address : { host: identityListen.host, port: await bind(identityServer, identityListen, secure.identity ? serverTls!.identity : insecure) };
    // Linkerd serves the policy API as its own Service (linkerd-policy :8090) under the destination identity: the same server, a second port.
    if (policyListen !== undefined) policyAddress = { host: policyListen.host, port: await bind(server, policyListen, policyTls ? serverTls!.destination : insecure) };
  } catch (err) {
    for (const s of servers) s.forceShutdown();
    serverTls?.close();
    throw err;
  }
  log.info(
    {
      listen: formatAddr(address),
      identityListen: formatAddr(identityAddress),
      ...(policyAddress !== undefined ? { policyListen: formatAddr(policyAddress), policyTls } : {}),
      tls: secure,
      ...(serverTls ? { serverNames } : {}),
      services: config.services.size,
      trustAnchors: issuer.trustAnchorsFile,
    },
    'control plane listening',
  );

  let reloading: Promise<boolean> = Promise.resolve(true);
  const reloadNow = async (): Promise<boolean> => {
    try {
      const next = await readConfig(configPath);
      if (next.text === lastText) return true;
      if (formatAddr(next.config.listen) !== formatAddr(config.listen) || JSON.stringify(next.config.identityListen) !== JSON.stringify(config.identityListen) || JSON.stringify(next.config.policyListen) !== JSON.stringify(config.policyListen) || JSON.stringify(next.config.identity.issuer) !== JSON.stringify(config.identity.issuer)) {
        log.warn('listen, identityListen, policyListen and identity.issuer changes take effect at the next start');
      }
      lastText = next.text;
      config = next.config;
      destination.update(config);
      identity.update(config);
      policy.update(config);
      reloads.inc({ result: 'ok' });
      log.info({ services: config.services.size }, 'configuration reloaded');
      return true;
    } catch (err) {
      reloads.inc({ result: 'error' });
      log.warn({ err: (err as Error).message }, 'configuration not reloaded; keeping the previous one');
      return false;
    }
  };
  // One reload at a time, in order.
  const reload = (): Promise<boolean> => (reloading = reloading.then(reloadNow));

  let watcher: FSWatcher | undefined;
  let debounce: NodeJS.Timeout | undefined;
  if (opts.watch ?? true) {
    // The directory, not the file: editors and `mv` replace the file, which ends a watch on it.
    watcher = watch(dirname(configPath), (_event, file) => {
      if (file !== null && file !== basename(configPath)) return;
      clearTimeout(debounce);
      debounce = setTimeout(() => void reload(), opts.reloadDebounceMs ?? 100);
    });
    watcher.on('error', (err) => log.warn({ err: err.message }, 'cannot watch the configuration; reloads stop'));
  }

  return {
    address,
    identityAddress,
    policyAddress,
    serverNames,
    secure,
    trustAnchorsPem: issuer.trustAnchorsPem,
    trustAnchorsFile: issuer.trustAnchorsFile,
    get config() {
      return config;
    },
    reload,
    close: async () => {
      watcher?.close();
      clearTimeout(debounce);
      for (const s of servers) s.forceShutdown();
      serverTls?.close();
      await reloading;
      log.info('control plane stopped');
    },
  };
}
