// Imported first by main.ts: Node 22.1+ keeps the V8 code of the modules a
// command loads on disk (os.tmpdir()/node-compile-cache, or $NODE_COMPILE_CACHE)
// so the next start skips compiling them. NODE_DISABLE_COMPILE_CACHE=1 turns it
// off; older Node and an unwritable directory just run without it.
import * as nodeModule from 'node:module';

const enable = (nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache;
try {
  enable?.();
} catch {
  // A cache is an optimisation: never a reason for a command to fail.
}
