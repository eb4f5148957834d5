// Identity.Certify of the development control plane: checks the request like
// Linkerd's identity service (one DNS SAN equal to the identity; a token that
// may certify it) and signs a leaf with the issuer.
//
// Status codes, as Linkerd's: InvalidArgument for a malformed request (no
// identity, an identity outside the trust domain, no token, a bad CSR or a
// SAN that is not the identity); FailedPrecondition when the token does not
// authenticate the identity.
import * as grpc from '@grpc/grpc-js';
import { msToTimestamp, type CertifyRequestMsg, type CertifyResponseMsg, type IdentityHandlers } from '../control/protos.js';
import type { Logger } from '../log/logger.js';
import { checkCsr, CsrError, signLeaf, type Issuer } from './ca.js';
import { isDnsName, type MeshConfig } from './mesh-config.js';

export interface CertifyEvent {
  identity: string;
  token: string;
  /** The DER CSR as received. */
  csr: Buffer;
  /** A gRPC status name: OK, INVALID_ARGUMENT, FAILED_PRECONDITION, INTERNAL. */
  result: string;
  details?: string;
}

export interface IdentityServiceHooks {
  count(rpc: string, result: string): void;
  /** Every Certify, after it is answered: for tests and audit logs. */
  onCertify?: (e: CertifyEvent) => void;
}

class Refusal extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
  }
}

export class IdentityService {
  #config: MeshConfig;
  readonly #issuer: Issuer;
  readonly #log: Logger;
  readonly #hooks: IdentityServiceHooks;

  constructor(config: MeshConfig, issuer: Issuer, log: Logger, hooks: IdentityServiceHooks) {
    this.#config = config;
    this.#issuer = issuer;
    this.#log = log;
    this.#hooks = hooks;
  }

  /** Tokens and the leaf lifetime follow reloads; the issuer does not. */
  update(config: MeshConfig): void {
    this.#config = config;
  }

  readonly handlers: IdentityHandlers = {
    Certify: (call, callback) => {
      const req = call.request;
      const token = req.token.toString('utf8').trim();
      this.#certify(req, token).then(
        (res) => {
          this.#done(req, token, 'OK');
          callback(null, res);
        },
        (err: unknown) => {
          const refusal = err instanceof Refusal ? err : new Refusal(grpc.status.INTERNAL, `signing failed: ${(err as Error).message}`);
          const name = grpc.status[refusal.code];
          this.#done(req, token, name, refusal.message);
          (refusal.code === grpc.status.INTERNAL ? this.#log.error : this.#log.warn).call(this.#log, { identity: req.identity, code: name, reason: refusal.message }, 'Certify refused');
          callback({ code: refusal.code, details: refusal.message });
        },
      );
    },
  };

  #done(req: CertifyRequestMsg, token: string, result: string, details?: string): void {
    this.#hooks.count('Certify', result);
    this.#hooks.onCertify?.({ identity: req.identity, token, csr: req.certificate_signing_request, result, ...(details !== undefined ? { details } : {}) });
  }

  async #certify(req: CertifyRequestMsg, token: string): Promise<CertifyResponseMsg> {
    const config = this.#config;
    const identity = req.identity.trim().toLowerCase();
    const invalid = (m: string): Refusal => new Refusal(grpc.status.INVALID_ARGUMENT, m);
    if (identity === '' || !isDnsName(identity)) throw invalid(`identity "${req.identity}" is not a DNS-like name`);
    if (!identity.endsWith(`.${config.trustDomain}`)) throw invalid(`identity ${identity} is not in the trust domain ${config.trustDomain}`);
    if (token === '') throw invalid('no token');
    let publicKey;
    try {
      publicKey = await checkCsr(req.certificate_signing_request, identity);
    } catch (err) {
      if (err instanceof CsrError) throw invalid(err.message);
      throw err;
    }
    if (config.tokens !== undefined) {
      const allowed = config.tokens.get(token);
      if (allowed === undefined) throw new Refusal(grpc.status.FAILED_PRECONDITION, 'the token is not recognised');
      if (allowed !== identity) throw new Refusal(grpc.status.FAILED_PRECONDITION, `the token does not authenticate ${identity}`);
    }
    const leaf = await signLeaf(this.#issuer, publicKey, identity, config.identity.leafLifetimeMs);
    this.#log.info({ identity, validUntil: leaf.notAfter.toISOString() }, 'certified');
    return {
      leaf_certificate: leaf.der,
      intermediate_certificates: this.#issuer.chainDer,
      valid_until: msToTimestamp(leaf.notAfter.getTime()),
    };
  }
}
