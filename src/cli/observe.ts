// bpfmesh observe: the kernel's steering decisions, live, per pod.
import { parseObserveFlags } from '../config/observe-flags.js';
import { select } from '../observe/sources.js';
import { Observation } from '../observe/session.js';
import { formatEvent, type ObservedEvent } from '../observe/events.js';

export const usage = `bpfmesh observe [--pod NAME | --cgroup PATH] [--follow] [--json] [--limit N] [--duration S] [--bpffs DIR]
                                         watch the kernel's steering decisions (without --follow: for S seconds, default 2)
`;

export async function run(argv: string[]): Promise<number> {
  const opts = parseObserveFlags(argv);
  const sel = select({ bpffs: opts.bpffs, pod: opts.pod, cgroup: opts.cgroup });
  let seen = 0;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => (finish = resolve));
  const print = (ev: ObservedEvent): void => {
    if (opts.limit !== undefined && seen >= opts.limit) return;
    seen++;
    process.stdout.write((opts.json ? JSON.stringify(ev) : formatEvent(ev)) + '\n');
    if (opts.limit !== undefined && seen >= opts.limit) finish();
  };
  const obs = new Observation(sel, { bpffs: opts.bpffs, onEvent: print });
  const stop = (): void => finish();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const timer = opts.follow ? undefined : setTimeout(stop, opts.durationMs);
  process.stderr.write(`observing ${sel.what} (${sel.sources.map((s) => s.pinDir).join(', ')})${opts.follow ? '; Ctrl-C to stop' : ` for ${opts.durationMs / 1000} s`}\n`);
  try {
    obs.start();
    await done;
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
    obs.close();
  }
  const lost = obs.dropped();
  if (lost > 0n) process.stderr.write(`bpfmesh observe: ${lost} events were lost to a full ring buffer (counted in mesh_obs_drops)\n`);
  return 0;
}
