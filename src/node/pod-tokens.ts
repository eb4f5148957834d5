// Tokens for the node proxy's pods: a TokenRequest for each pod's service
// account (audience identity.l5d.io, bound to the pod, so it dies with it),
// written to a file only this process reads, which the pod's IdentityClient
// re-reads on every Certify (as a sidecar re-reads its projected token).
// Renewed at 80% of its lifetime; the file is removed when the pod is no
// longer served. The pod's own projected token is never read.
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { errorCode } from '../errors.js';
import type { KubeClient } from '../kube/client.js';
import type { Logger } from '../log/logger.js';
import type { ServedPod } from './pod-proxies.js';

/** Linkerd's identity audience (linkerd2-proxy's LINKERD2_PROXY_IDENTITY_TOKEN_FILE is a projected token for it). */
export const IDENTITY_AUDIENCE = 'identity.l5d.io';
const LIFETIME_S = 3600;
const RETRY_MS = 10_000;

export class PodTokens {
  readonly dir: string;
  readonly #client: Pick<KubeClient, 'createToken'>;
  readonly #log: Logger;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #onFailure: (() => void) | undefined;

  constructor(client: Pick<KubeClient, 'createToken'>, log: Logger, opts: { dir?: string; onFailure?: () => void } = {}) {
    this.#client = client;
    this.#log = log.child({ component: 'pod-tokens' });
    // 0700 under $TMPDIR (the DaemonSet points it at a memory-backed emptyDir: tokens never reach a disk).
    this.dir = mkdtempSync(join(opts.dir ?? tmpdir(), 'bpfmesh-pod-tokens-'));
    this.#onFailure = opts.onFailure;
  }

  /** Where the pod's token is kept (once fileFor succeeded). */
  pathOf(uid: string): string {
    return join(this.dir, uid);
  }

  /** Requests the pod's token and writes it; undefined (logged) when the API server refuses. */
  async fileFor(pod: ServedPod): Promise<string | undefined> {
    const file = join(this.dir, pod.uid);
    try {
      await this.#renew(pod, file);
      return file;
    } catch (err) {
      this.#onFailure?.();
      this.#log.warn({ pod: `${pod.namespace}/${pod.name}`, serviceAccount: pod.serviceAccount, code: errorCode(err), err: (err as Error).message }, 'no token for the pod\'s service account (TokenRequest; RBAC serviceaccounts/token create?): the pod has no identity');
      return undefined;
    }
  }

  async #renew(pod: ServedPod, file: string): Promise<void> {
    const t = await this.#client.createToken(pod.namespace, pod.serviceAccount, { audience: IDENTITY_AUDIENCE, expirationSeconds: LIFETIME_S, pod: { name: pod.name, uid: pod.uid } });
    writeFileSync(file, t.token, { mode: 0o600 });
    const inMs = Math.max(RETRY_MS, Math.floor((t.expiresAt - Date.now()) * 0.8));
    this.#schedule(pod, file, inMs);
  }

  #schedule(pod: ServedPod, file: string, inMs: number): void {
    clearTimeout(this.#timers.get(pod.uid));
    const timer = setTimeout(() => {
      this.#renew(pod, file).catch((err: unknown) => {
        this.#onFailure?.();
        this.#log.warn({ pod: `${pod.namespace}/${pod.name}`, err: (err as Error).message }, 'token renewal failed; retrying');
        this.#schedule(pod, file, RETRY_MS);
      });
    }, inMs);
    timer.unref();
    this.#timers.set(pod.uid, timer);
  }

  release(pod: ServedPod): void {
    clearTimeout(this.#timers.get(pod.uid));
    this.#timers.delete(pod.uid);
    try {
      unlinkSync(join(this.dir, pod.uid));
    } catch {
      /* never written */
    }
  }

  close(): void {
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
