// A Duplex over a socket that first yields bytes already read from it.
// node:http2 cannot take over a TLS socket that has bytes unshifted into it
// (Node 20 crashes in the session's first receive), so an h2 connection that
// arrived over mTLS is handed over through this wrapper instead.
import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

export function replayDuplex(sock: Socket, first: Buffer): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    read() {
      sock.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      sock.write(chunk, cb);
    },
    final(cb) {
      sock.end(cb);
    },
    destroy(err, cb) {
      sock.destroy(err ?? undefined);
      cb(err);
    },
  });
  if (first.length > 0) d.push(first);
  sock.on('data', (chunk: Buffer) => {
    if (!d.push(chunk)) sock.pause();
  });
  sock.on('end', () => d.push(null));
  sock.on('error', (err) => d.destroy(err));
  sock.on('close', () => d.destroy());
  return d;
}
