// One line of `bpfmesh check`: what was checked, what was found, and, when
// it failed, a stable code and what to do.

export interface CheckLine {
  /** Stable id, e.g. "bpffs", "prog_type.sk_lookup", "foreign.cgroup_inet4_connect". */
  id: string;
  ok: boolean;
  /** What was checked, short. */
  title: string;
  /** What was found. */
  detail: string;
  /** BPFMESH_E_* when not ok. */
  code?: string;
  /** What to do when not ok. */
  fix?: string;
}

export const pass = (id: string, title: string, detail: string): CheckLine => ({ id, ok: true, title, detail });

export const fail = (id: string, title: string, detail: string, code: string, fix: string): CheckLine => ({ id, ok: false, title, detail, code, fix });

export interface CheckOptions {
  /** Before install: no pins expected, the installed state is not checked. */
  pre: boolean;
  bpffs: string;
  bpffsExplicit: boolean;
  /** Where the node-wide programs attach; undefined = the cgroup2 mount. */
  cgroupRoot: string | undefined;
  /** A pod's cgroup (init mode): checked for programs attached there or inherited. */
  cgroup: string | undefined;
  /** A pod's network namespace: sk_lookup programs there, proxy-init's iptables chains. */
  netns: string | undefined;
  /** One pod install (or node/<id>) to check instead of every one. */
  podName: string | undefined;
  /** The node-wide modes (bpfmesh node, CNI): CAP_SYS_PTRACE too, and the node-wide install when not --pre. */
  node: boolean;
  /** The node agent's /ready URL: ready only once it has reconciled its pods. */
  agentReady: string | undefined;
}

export interface CheckReport {
  ok: boolean;
  mode: 'pre' | 'installed';
  lines: CheckLine[];
}
