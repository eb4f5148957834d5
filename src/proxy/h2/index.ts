// HTTP/2 (h2c, prior knowledge) forwarding; see serve.ts.
export { serveH2, drainH2, type H2Connection, type H2Context } from './serve.js';
export { H2UpstreamPool, PEER_NOT_H2, type UpstreamStream } from './pool.js';
export { H2ErrorCodes } from './codes.js';
export { H2_DEFAULTS, type H2Log, type H2Settings } from './settings.js';
