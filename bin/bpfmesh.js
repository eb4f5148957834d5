#!/usr/bin/env node
'use strict';
// Entry point of `npx bpfmesh`; the code is TypeScript compiled to dist/.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write('bpfmesh: BPFMESH_E_NOT_BUILT: dist/ is missing; run "npm install" (or "npm run build") in the repository first\n');
  process.exit(1);
}
require(entry).main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err) => { process.stderr.write(`bpfmesh: BPFMESH_E_INTERNAL: ${err && err.stack || err}\n`); process.exitCode = 1; },
);
