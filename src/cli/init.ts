// bpfmesh init: attach and pin interception for one pod, then exit.
import { parseInitFlags } from '../config/pod-flags.js';
import { createCliLogger } from '../log/cli-logger.js';
import { install } from '../intercept/install.js';
import { formatPlan, planInstall } from '../intercept/plan.js';
import { netnsCookieOf, resolvePod } from '../intercept/pod.js';
import { nodeEnrollmentOf, nodePinDir } from '../intercept/node-wide.js';
import { existsSync } from 'node:fs';

export const usage = `bpfmesh init [flags]   steer a pod's TCP traffic through its proxy (replaces proxy-init)

  --cgroup DIR                  the pod's cgroup v2 directory (default: this process's cgroup)
  --netns PATH                  the pod's network namespace, /run/netns/NAME or /proc/PID/ns/net (default: this process's)
  --pod-name NAME               pin folder name under /sys/fs/bpf/bpfmesh/ (default: the netns name)
  --incoming-proxy-port N       the proxy's inbound listener (4143)
  --outgoing-proxy-port N       the proxy's outbound listener (4140)
  --admin-port N, --control-port N   always skipped inbound; only the proxy may bind them (4191, 4190)
  --proxy-uid N                 the proxy's uid: its connections are never redirected (2102)
  --proxy-gid N                 the proxy's gid, also exempt (none)
  --inbound-ports-to-ignore L   ports or ranges, e.g. 25,8000-8100, reaching the app directly
  --outbound-ports-to-ignore L  destination ports or ranges that bypass the proxy
  --ports-to-redirect L         steer only these inbound ports (default: all)
  --subnets-to-ignore L         CIDRs: inbound sources and outbound destinations that bypass the proxy
  --fail-open                   pass connections untouched until the proxy listens (default: fail-closed)
  --no-sockpath                 keep app<->proxy bytes on loopback TCP (no sk_msg socket path)
  --sockpath-high-water SIZE    bytes queued at the peer above which the socket path uses TCP (2Mi)
  --bpffs DIR                   bpf filesystem (default /sys/fs/bpf, mounted if missing)
  --simulate                    print what would be done; change nothing
  --log-format plain|json, --log-level LEVEL
`;

export async function run(argv: string[]): Promise<number> {
  const opts = parseInitFlags(argv);
  const log = createCliLogger(opts).child({ component: 'init' });
  const pod = resolvePod(opts);
  const plan = planInstall(pod, opts);
  if (opts.ignoredFlags.length > 0) log.info({ flags: opts.ignoredFlags }, 'iptables-only flags accepted and ignored');
  if (opts.simulate) {
    process.stdout.write(opts.logFormat === 'json' ? JSON.stringify(plan, null, 2) + '\n' : formatPlan(plan));
    return 0;
  }
  const enrolled = existsSync(nodePinDir(opts.bpffs)) ? nodeEnrollmentOf(opts.bpffs, netnsCookieOf(pod.netnsPath)) : null;
  if (enrolled !== null) {
    // The CNI plugin or bpfmesh node covers this pod already; a pod install on top would steer it twice.
    log.info({ pod: pod.name, nodeWideId: enrolled }, 'this pod is intercepted node-wide already; nothing to do');
    return 0;
  }
  const started = process.hrtime.bigint();
  const result = install(pod, opts, { dir: opts.bpffs, explicit: opts.bpffsExplicit }, log);
  log.info(
    {
      pod: pod.name,
      pinDir: pod.pinDir,
      netnsCookie: result.netnsCookie.toString(),
      fresh: result.fresh,
      attached: result.links.filter((l) => l.action === 'attached').length,
      updated: result.links.filter((l) => l.action === 'updated').length,
      portRules: result.policy.ports,
      subnetRules: result.policy.subnets,
      mode: plan.settings.mode,
      ms: Number(process.hrtime.bigint() - started) / 1e6,
    },
    result.fresh ? 'interception installed' : 'interception updated',
  );
  return 0;
}
