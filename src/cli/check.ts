// bpfmesh check: can this host run bpfmesh, and is what is installed whole?
import { parseCheckFlags } from '../check/flags.js';
import { formatReport, runChecks } from '../check/run.js';

export const usage = `bpfmesh check [flags]   probe the kernel and host for what bpfmesh needs; exit 1 on any ✗

  --pre                 before install: environment only (no pins expected); without it the installed state too
  --json                one JSON object: { ok, mode, lines: [{ id, ok, title, detail, code?, fix? }] }
  --bpffs DIR           bpf filesystem (default /sys/fs/bpf)
  --cgroup-root DIR     where the node-wide programs attach (default: the cgroup2 mount)
  --cgroup DIR          a pod's cgroup: other programs attached there or inherited
  --netns PATH          a pod's netns: other sk_lookup programs, leftover proxy-init iptables chains
  --pod-name NAME       check this pod install only, or node/<id> for one node-wide pod (default: every install found)
  --node                node-wide modes: CAP_SYS_PTRACE too, and the node-wide install (without --pre)
  --agent-ready URL     also require the node agent's /ready (e.g. http://127.0.0.1:4192/ready)
`;

export async function run(argv: string[]): Promise<number> {
  const opts = parseCheckFlags(argv);
  const report = await runChecks(opts);
  process.stdout.write(opts.json ? JSON.stringify(report, null, 2) + '\n' : formatReport(report));
  return report.ok ? 0 : 1;
}
