// @peculiar/x509, ready to use: its dependency tsyringe needs a Reflect
// metadata polyfill loaded first, and it signs with Node's WebCrypto. Import
// x509 from here, never from the package directly.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export { x509 };
