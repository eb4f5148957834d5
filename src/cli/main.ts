// bpfmesh <command>: dispatch, and the one place errors become exit codes.
import './compile-cache.js';
import { BpfmeshError, ErrorCodes } from '../errors.js';

interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, () => Promise<Command>> = {
  init: () => import('./init.js'),
  reset: () => import('./reset.js'),
  inspect: () => import('./inspect.js'),
  observe: () => import('./observe.js'),
  proxy: () => import('./proxy.js'),
  demo: () => import('./demo.js'),
  'control-plane': () => import('./control-plane.js'),
  node: () => import('./node.js'),
  cni: () => import('./cni.js'),
  'cni-install': () => import('./cni-install.js'),
  check: () => import('./check.js'),
  tap: () => import('./tap.js'),
};

const INPUT_ERRORS = new Set<string>([ErrorCodes.BAD_FLAG, ErrorCodes.BAD_PORT, ErrorCodes.BAD_PORT_RANGE, ErrorCodes.BAD_CIDR]);

async function help(): Promise<string> {
  const parts = ['bpfmesh: transparent service-mesh interception with BPF\n\nCommands:'];
  for (const name of Object.keys(COMMANDS)) parts.push((await COMMANDS[name]!()).usage);
  return parts.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(await help());
    return name === undefined ? 2 : 0;
  }
  const load = COMMANDS[name];
  if (load === undefined) {
    process.stderr.write(`bpfmesh: ${ErrorCodes.BAD_FLAG}: unknown command "${name}"; commands: ${Object.keys(COMMANDS).join(', ')}\n`);
    return 2;
  }
  const cmd = await load();
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(cmd.usage);
    return 0;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    const e = err as Partial<BpfmeshError> & Error;
    const code = typeof e.code === 'string' ? e.code : ErrorCodes.INTERNAL;
    process.stderr.write(`bpfmesh ${name}: ${code}: ${e.message}\n`);
    if (e.verifierLog) process.stderr.write(`--- verifier log ---\n${e.verifierLog.trimEnd()}\n--- end of verifier log ---\n`);
    if (!(err instanceof BpfmeshError) && !code.startsWith('BPFMESH_E_')) process.stderr.write(`${e.stack ?? ''}\n`);
    return INPUT_ERRORS.has(code) ? 2 : 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`bpfmesh: ${ErrorCodes.INTERNAL}: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
