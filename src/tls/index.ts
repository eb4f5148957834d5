// mTLS between proxies (Linkerd's rules): credentials, the outbound
// connector, the inbound SNI peek and termination, labels and headers.
export { TlsStore, type IdentityMaterial, type TlsStoreOptions } from './tls-store.js';
export { tlsConnector, isVerifyError, type ExpectedServer, type TlsConnector, type TlsConnectorOptions } from './client.js';
export { peekClientHello, shouldTerminate, acceptTls, DEFAULT_PEEK_MAX_BYTES, type ClientHelloPeek, type AcceptTlsOptions, type AcceptedTls } from './server.js';
export { parseClientHello, type HelloVerdict } from './client-hello.js';
export * from './labels.js';
