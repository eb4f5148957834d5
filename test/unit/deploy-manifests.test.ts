// deploy/ and the Dockerfile against the code. deploy/ is a kustomize base
// (a meshed workload) with one overlay per interception mode; each overlay is
// rendered with kubectl's kustomize, and every rendered object is validated
// against the Kubernetes API's own schemas (the kubernetes-models package:
// types, required fields, enums, formats; kubernetes-types for unknown
// fields), every container of the bpfmesh
// image runs a real `bpfmesh` command with flags that command lists, the
// sidecar sets only variables the proxy reads, probes hit the admin ports,
// and the Dockerfile copies what exists. No cluster and no Docker engine needed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../../src/config/paths.js';
import { PROXY_ENV } from '../../src/config/proxy-env.js';
import { DEFAULT_CLUSTER_NETWORKS, POLICY_ENV } from '../../src/config/policy-env.js';
import { parseNetConf } from '../../src/cni/config.js';
import { cniSocketOf, readPluginConfig, renderShim } from '../../src/cni/installer.js';
import { kubeToolSkipReason, runKubeTool } from '../helpers/kube-tools.js';

type Json = Record<string, unknown>;
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: Json }[];
  ports?: { containerPort: number; name?: string }[];
  readinessProbe?: { httpGet?: { path: string; port: number | string }; exec?: { command: string[] } };
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
  securityContext?: { runAsUser?: number; privileged?: boolean; capabilities?: { add?: string[]; drop?: string[] } };
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
}
interface PodSpec {
  hostPID?: boolean;
  serviceAccountName?: string;
  containers: Container[];
  initContainers?: Container[];
  volumes?: { name: string; hostPath?: { path: string }; configMap?: { name: string } }[];
}
interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Json;
  data?: Record<string, string>;
  rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  roleRef?: { kind: string; name: string };
  subjects?: { kind: string; name: string; namespace: string }[];
  /** The overlay it was rendered from. */
  file: string;
}

const DEPLOY = join(REPO_ROOT, 'deploy');
const CLI = join(REPO_ROOT, 'dist/src/cli/main.js');

/** The interception modes, one overlay each (deploy/overlays/<mode>), over deploy/base. */
export const OVERLAYS = ['init-container', 'node', 'cni', 'node-proxy'] as const;
const KUSTOMIZE_SKIP = kubeToolSkipReason('kubectl');

/** Every YAML file under deploy/ (sources, kustomizations, patches; not Helm templates, which are not YAML until rendered). */
function yamlFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? (e.name === 'templates' ? [] : yamlFiles(join(dir, e.name))) : /\.ya?ml$/.test(e.name) ? [join(dir, e.name)] : [],
  );
}

function parseDocs(text: string, file: string): Doc[] {
  const docs: Doc[] = [];
  for (const d of parseAllDocuments(text)) {
    assert.deepEqual(d.errors, [], `${file}: YAML errors`);
    const v = d.toJS() as Doc | null;
    if (v !== null) docs.push({ ...v, file });
  }
  return docs;
}

/** What `kubectl kustomize deploy/overlays/<mode>` renders, for every mode. */
function loadDocs(): Doc[] {
  if (KUSTOMIZE_SKIP !== false) return [];
  return OVERLAYS.flatMap((mode) => parseDocs(runKubeTool('kubectl', ['kustomize', join(DEPLOY, 'overlays', mode)]), mode));
}
const DOCS = loadDocs();

function podSpec(d: Doc): PodSpec | undefined {
  if (d.kind === 'Pod') return d.spec as unknown as PodSpec;
  const tpl = (d.spec?.['template'] as { spec?: PodSpec } | undefined)?.spec;
  return ['Deployment', 'DaemonSet', 'StatefulSet', 'Job'].includes(d.kind) ? tpl : undefined;
}

interface Use {
  doc: Doc;
  pod: PodSpec;
  c: Container;
  init: boolean;
  /** One `bpfmesh <command> args...` per invocation (args only, or found in an sh -c script). */
  runs: { command: string; argv: string[] }[];
}

const isOurImage = (image: string): boolean => /(^|\/)bpfmesh(:|@|$)/.test(image);

/** The bpfmesh invocations of a container: args after the image's ENTRYPOINT, or the `bpfmesh ...` lines of an sh -c script. */
function invocations(c: Container): { command: string; argv: string[] }[] {
  if (c.command === undefined) {
    const [command, ...argv] = c.args ?? ['proxy']; // the image's CMD
    return [{ command: command!, argv }];
  }
  assert.deepEqual(c.command, ['/bin/sh', '-c'], `${c.name}: command is either unset (the bpfmesh entrypoint) or an sh -c script`);
  const script = (c.args ?? []).join('\n').replace(/\\\n/g, ' ');
  const runs = [...script.matchAll(/(?:^|[\s;&|])(?:exec\s+)?bpfmesh\s+([a-z-]+)([^\n]*)/g)].map((m) => ({ command: m[1]!, argv: m[2]!.trim().split(/\s+/) }));
  assert.ok(runs.length > 0, `${c.name}: the script runs no bpfmesh command`);
  return runs;
}

const USES: Use[] = DOCS.flatMap((doc) => {
  const pod = podSpec(doc);
  if (pod === undefined) return [];
  return [...(pod.initContainers ?? []).map((c) => ({ c, init: true })), ...pod.containers.map((c) => ({ c, init: false }))]
    .filter(({ c }) => isOurImage(c.image))
    .map(({ c, init }) => ({ doc, pod, c, init, runs: invocations(c) }));
});

const usageCache = new Map<string, string>();
function usageOf(command: string): string {
  let u = usageCache.get(command);
  if (u === undefined) {
    const r = spawnSync(process.execPath, [CLI, command, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `bpfmesh ${command} is not a command: ${r.stderr}`);
    u = r.stdout;
    usageCache.set(command, u);
  }
  return u;
}
const flagsOf = (argv: string[]): string[] => argv.filter((a) => /^--[a-z]/.test(a)).map((a) => a.split('=')[0]!);
const lists = (usage: string, flag: string): boolean => new RegExp(`(^|[\\s,(\\[|])${flag}(?![a-z-])`).test(usage);
const flagValue = (argv: string[], flag: string): string | undefined => {
  const i = argv.indexOf(flag);
  return i < 0 ? undefined : argv[i + 1];
};
const envOf = (c: Container, name: string): string | undefined => c.env?.find((e) => e.name === name)?.value;
const portOf = (addr: string): number => Number(/:(\d+)$/.exec(addr)?.[1]);
const uses = (command: string): Use[] => USES.filter((u) => u.runs.some((r) => r.command === command));

describe('deploy/ manifests', { skip: KUSTOMIZE_SKIP }, () => {
  test('every YAML file under deploy/ parses; each overlay renders the base workload plus its mode', () => {
    const files = yamlFiles(DEPLOY);
    assert.ok(files.length >= 8, 'base + three overlays, with their kustomizations');
    for (const f of files) parseDocs(readFileSync(f, 'utf8'), f);
    const named = (mode: string, kind: string, name: string): Doc | undefined => DOCS.find((d) => d.file === mode && d.kind === kind && d.metadata.name === name);
    for (const mode of OVERLAYS) assert.ok(named(mode, 'Deployment', 'bpfmesh-sidecar-example'), `overlays/${mode} has the base workload`);
    const initOf = (mode: string) => (named(mode, 'Deployment', 'bpfmesh-sidecar-example')!.spec as { template: { spec: PodSpec } }).template.spec.initContainers;
    assert.deepEqual(initOf('init-container')?.map((c) => c.name), ['linkerd-init'], 'init-container: the patch adds linkerd-init to the workload');
    assert.equal(initOf('node'), undefined, 'node: no init container');
    assert.equal(initOf('cni'), undefined, 'cni: no init container');
    assert.ok(named('node', 'DaemonSet', 'bpfmesh-node') && !named('node', 'DaemonSet', 'bpfmesh-cni'));
    assert.ok(named('cni', 'DaemonSet', 'bpfmesh-cni') && !named('cni', 'DaemonSet', 'bpfmesh-node'));
    // node-proxy: the node overlay's agent with --proxy, a surge rollout (handover), and TokenRequest RBAC only.
    const np = named('node-proxy', 'DaemonSet', 'bpfmesh-node')?.spec as { updateStrategy: { rollingUpdate: { maxSurge: number; maxUnavailable: number } }; template: { spec: PodSpec } } | undefined;
    assert.ok(np !== undefined && np.template.spec.containers[0]?.args?.includes('--proxy'), 'node-proxy: the agent runs with --proxy');
    assert.deepEqual(np.updateStrategy.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 });
    assert.deepEqual((named('node-proxy', 'ClusterRole', 'bpfmesh-node-proxy-tokens') as unknown as { rules: unknown }).rules, [{ apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] }]);
    assert.ok(!named('node', 'ClusterRole', 'bpfmesh-node-proxy-tokens'), 'node: no token RBAC without the proxy');
    assert.equal(DOCS.filter((d) => d.file === 'init-container').length, 1, 'init-container installs nothing cluster-wide');
  });

  test('every rendered object validates against the Kubernetes API schemas (kubernetes-models)', async () => {
    const validate = async (d: Doc): Promise<void> => {
      const group = d.apiVersion.includes('/') ? d.apiVersion : `v1`;
      // Dynamic import: kubernetes-models is ESM only.
      const mod = (await import(`kubernetes-models/${group}/${d.kind}`)) as Record<string, new (data: unknown) => { validate(): void }>;
      const Model = mod[d.kind];
      assert.ok(Model !== undefined, `kubernetes-models has ${d.apiVersion} ${d.kind}`);
      const obj: Record<string, unknown> = { ...d };
      delete obj['file'];
      new Model(obj).validate();
    };
    for (const d of DOCS) {
      await validate(d).catch((err: Error) => assert.fail(`overlays/${d.file}: ${d.kind} ${d.metadata.name}: ${err.message}`));
    }
    // And the check can fail: a port as a string, a container without a name, a mount propagation Kubernetes does not have.
    const ds = DOCS.find((d) => d.kind === 'DaemonSet')!;
    const broken = (edit: (c: Container) => void): Doc => {
      const copy = structuredClone(ds);
      edit((copy.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!);
      return copy;
    };
    const bad: [string, Doc, RegExp][] = [
      ['a string port', broken((c) => ((c.ports ??= [{ containerPort: 1 }])[0]!.containerPort = 'eighty' as unknown as number)), /containerPort must be integer/],
      ['no container name', broken((c) => delete (c as Partial<Container>).name), /must have required property 'name'|required property name/],
      ['a bad mountPropagation', broken((c) => (c.volumeMounts![0]!.mountPropagation = 'Sideways')), /mountPropagation must be equal to one of the allowed values/],
    ];
    for (const [what, doc, want] of bad) await assert.rejects(validate(doc), want, what);
  });

  test('no rendered object has a field the API does not know (kubernetes-types, TypeScript excess-property checks)', () => {
    // kubernetes-models does not flag unknown fields; the API server's strict field validation would.
    // Each object becomes a TypeScript literal typed as its kind from kubernetes-types (generated from
    // the API's OpenAPI): a misspelt or misplaced field is an excess property, a wrong type an error.
    const typePath = (apiVersion: string): string => (apiVersion.includes('/') ? `${apiVersion.split('/')[0]!.split('.')[0]}/${apiVersion.split('/')[1]}` : `core/${apiVersion}`);
    const literal = (d: Doc, i: number): string => {
      const obj: Record<string, unknown> = { ...d };
      delete obj['file'];
      return `export const o${i}: import('kubernetes-types/${typePath(d.apiVersion)}').${d.kind} = ${JSON.stringify(obj)};\n`;
    };
    const ds = DOCS.find((d) => d.kind === 'DaemonSet')!;
    const typo = structuredClone(ds);
    const c0 = (typo.spec as { template: { spec: PodSpec } }).template.spec.containers[0]! as unknown as Record<string, unknown>;
    c0['imagePullPolicyy'] = 'Always';
    const dir = join(REPO_ROOT, 'dist');
    const good = join(dir, `.manifest-types-${process.pid}.ts`);
    const bad = join(dir, `.manifest-types-bad-${process.pid}.ts`);
    writeFileSync(good, DOCS.map(literal).join(''));
    writeFileSync(bad, literal(typo, 0));
    try {
      const program = ts.createProgram([good, bad], { strict: true, noEmit: true, skipLibCheck: true, module: ts.ModuleKind.Node16, moduleResolution: ts.ModuleResolutionKind.Node16, types: [] });
      const messages = (file: string): string[] =>
        ts.getPreEmitDiagnostics(program, program.getSourceFile(file)).map((x) => `${x.file?.fileName === file ? 'line ' + (x.file.getLineAndCharacterOfPosition(x.start ?? 0).line + 1) + ': ' : ''}${ts.flattenDiagnosticMessageText(x.messageText, ' ')}`);
      const errs = messages(good);
      assert.deepEqual(errs, [], `object i of the rendered list (o<i>): ${errs.join('\n')}`);
      assert.ok(DOCS.length >= 10, 'every overlay\'s objects were typed');
      assert.match(messages(bad).join('\n'), /imagePullPolicyy/, 'and a misspelt field is caught');
    } finally {
      rmSync(good, { force: true });
      rmSync(bad, { force: true });
    }
  });

  test('every document is a Kubernetes object (apiVersion, kind, metadata.name)', () => {
    for (const d of DOCS) {
      assert.match(d.apiVersion, /^(v1|(apps|rbac\.authorization\.k8s\.io|batch)\/v1)$/, `${d.file}: apiVersion ${d.apiVersion}`);
      assert.match(d.kind, /^[A-Z][A-Za-z]+$/, `${d.file}: kind`);
      assert.equal(typeof d.metadata?.name, 'string', `${d.file} ${d.kind}: metadata.name`);
      assert.match(d.metadata.name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, `${d.file} ${d.kind}: a DNS-1123 name`);
      if (['Deployment', 'DaemonSet'].includes(d.kind)) {
        const sel = (d.spec?.['selector'] as { matchLabels: Json }).matchLabels;
        const labels = ((d.spec?.['template'] as { metadata: { labels: Json } }).metadata.labels);
        for (const [k, v] of Object.entries(sel)) assert.equal(labels[k], v, `${d.file} ${d.metadata.name}: the selector matches the template`);
      }
    }
    assert.ok(USES.length >= 5, 'init, proxy (twice), node and cni-install containers found');
  });

  test('every bpfmesh container runs a real command with flags that command lists', () => {
    for (const u of USES) {
      for (const run of u.runs) {
        const usage = usageOf(run.command);
        for (const flag of flagsOf(run.argv)) assert.ok(lists(usage, flag), `${u.doc.file} ${u.c.name}: bpfmesh ${run.command} does not list ${flag}`);
      }
    }
    const unknown = spawnSync(process.execPath, [CLI, 'no-such-command', '--help'], { encoding: 'utf8' });
    assert.equal(unknown.status, 2, 'and the check would catch a command that does not exist');
    assert.ok(!lists(usageOf('proxy'), '--no-such-flag'), 'and a flag that is not listed');
  });

  test('the init container takes linkerd-init\'s arguments, needs only BPF, NET_ADMIN, SYS_ADMIN, and has the host\'s bpffs and cgroup2', () => {
    const [u] = uses('init');
    assert.ok(u?.init, 'bpfmesh init runs as an init container');
    const argv = u.runs[0]!.argv;
    assert.equal(flagValue(argv, '--incoming-proxy-port'), '4143');
    assert.equal(flagValue(argv, '--outgoing-proxy-port'), '4140');
    assert.equal(flagValue(argv, '--proxy-uid'), '2102');
    assert.deepEqual(flagValue(argv, '--inbound-ports-to-ignore')?.split(',').slice(0, 2), ['4190', '4191']);
    assert.ok(argv.includes('--cgroup'), 'the pod cgroup is given: the default (its own cgroup) would cover only the init container');
    assert.deepEqual([...(u.c.securityContext?.capabilities?.add ?? [])].sort(), ['BPF', 'NET_ADMIN', 'SYS_ADMIN']);
    assert.deepEqual(u.c.securityContext?.capabilities?.drop, ['ALL']);
    assert.notEqual(u.c.securityContext?.privileged, true);
    const hostPaths = (u.c.volumeMounts ?? []).map((m) => u.pod.volumes?.find((v) => v.name === m.name)?.hostPath?.path);
    assert.deepEqual(hostPaths.sort(), ['/sys/fs/bpf', '/sys/fs/cgroup']);
  });

  test('proxy containers: uid 2102, no capabilities, only LINKERD2_PROXY_* variables the proxy reads, probes on the admin port', () => {
    const proxies = uses('proxy');
    assert.ok(proxies.length >= 2);
    const known = new Set<string>([...Object.values(PROXY_ENV), ...Object.values(POLICY_ENV)]);
    for (const u of proxies) {
      const where = `${u.doc.file} ${u.c.name}`;
      assert.equal(u.c.securityContext?.runAsUser, 2102, `${where}: runs as the proxy uid`);
      assert.deepEqual(u.c.securityContext?.capabilities, { drop: ['ALL'] }, `${where}: no capability`);
      for (const e of u.c.env ?? []) {
        if (e.name.startsWith('_')) {
          assert.ok(u.c.env!.some((o) => o.value?.includes(`$(${e.name})`)), `${where}: helper ${e.name} is used by another variable`);
        } else {
          assert.ok(known.has(e.name), `${where}: ${e.name} is not read by src/config/proxy-env.ts`);
        }
      }
      const admin = envOf(u.c, PROXY_ENV.adminListenAddr);
      assert.ok(admin !== undefined && /^(0\.0\.0\.0|\[::\]):/.test(admin), `${where}: the admin server must listen beyond loopback for the kubelet`);
      assert.equal(u.c.readinessProbe?.httpGet?.path, '/ready');
      assert.equal(u.c.livenessProbe?.httpGet?.path, '/live');
      assert.equal(Number(u.c.readinessProbe?.httpGet?.port), portOf(admin), `${where}: readiness on the admin port`);
      assert.equal(Number(u.c.livenessProbe?.httpGet?.port), portOf(admin), `${where}: liveness on the admin port`);
    }
    const sidecar = proxies.find((u) => u.doc.kind === 'Deployment' && !u.pod.initContainers)!;
    for (const name of ['destinationSvcAddr', 'destinationContext', 'identityTrustAnchors', 'identityTokenFile', 'identityLocalName'] as const) {
      assert.ok(sidecar.c.env?.some((e) => e.name === PROXY_ENV[name]), `sidecar.yaml sets ${PROXY_ENV[name]} as Linkerd's injector does`);
    }
    // The policy API as Linkerd's charts name it: its own Service on 8090, under the destination identity, per pod.
    assert.equal(envOf(sidecar.c, POLICY_ENV.svcAddr), 'linkerd-policy.linkerd.svc.cluster.local.:8090');
    assert.equal(envOf(sidecar.c, POLICY_ENV.svcName), envOf(sidecar.c, PROXY_ENV.destinationSvcName));
    assert.equal(envOf(sidecar.c, POLICY_ENV.workload), '{"ns":"$(_pod_ns)","pod":"$(_pod_name)"}');
    assert.equal(envOf(sidecar.c, POLICY_ENV.defaultPolicy), 'all-unauthenticated');
    assert.equal(envOf(sidecar.c, POLICY_ENV.clusterNetworks), DEFAULT_CLUSTER_NETWORKS);
  });

  test('the node DaemonSet: hostPID, host bpffs (Bidirectional), cgroup2 and netns mounts, probes on --admin-addr, RBAC only reads pods', () => {
    const [u] = uses('node');
    assert.ok(u !== undefined && u.doc.kind === 'DaemonSet');
    const argv = u.runs[0]!.argv;
    assert.equal(flagValue(argv, '--node-name'), '$(NODE_NAME)');
    assert.deepEqual(u.c.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
    assert.equal(flagValue(argv, '--kubeconfig'), undefined, 'in-cluster service account');
    assert.equal(u.pod.hostPID, true);
    const mount = (path: string) => u.c.volumeMounts?.find((m) => m.mountPath === path);
    const hostOf = (path: string) => u.pod.volumes?.find((v) => v.name === mount(path)?.name)?.hostPath?.path;
    assert.equal(hostOf('/sys/fs/bpf'), '/sys/fs/bpf');
    assert.equal(mount('/sys/fs/bpf')?.mountPropagation, 'Bidirectional');
    assert.equal(u.c.securityContext?.privileged, true, 'Kubernetes allows Bidirectional only in privileged containers');
    assert.equal(hostOf(flagValue(argv, '--cgroup-root')!), '/sys/fs/cgroup', '--cgroup-root is the host\'s cgroup2 mount');
    assert.equal(flagValue(argv, '--bpffs'), '/sys/fs/bpf');
    assert.equal(hostOf('/run/netns'), '/run/netns');
    assert.equal(mount('/run/netns')?.mountPropagation, 'HostToContainer');
    const adminPort = portOf(flagValue(argv, '--admin-addr')!);
    assert.equal(adminPort, 4192);
    // Readiness: bpfmesh check on the same cgroup root and bpffs, with the agent's /ready on its admin port.
    const [bin, sub, ...probe] = u.c.readinessProbe?.exec?.command ?? [];
    assert.equal(bin, '/app/bin/bpfmesh.js', 'the probe runs the image\'s CLI');
    assert.equal(sub, 'check');
    for (const f of flagsOf(probe)) assert.ok(lists(usageOf('check'), f), `bpfmesh check lists ${f}`);
    assert.ok(!probe.includes('--pre'), 'the probe checks the installed state');
    assert.equal(flagValue(probe, '--cgroup-root'), flagValue(argv, '--cgroup-root'));
    assert.equal(flagValue(probe, '--bpffs'), flagValue(argv, '--bpffs'));
    assert.equal(portOf(new URL(flagValue(probe, '--agent-ready')!).host), adminPort);
    assert.equal(Number(u.c.livenessProbe?.httpGet?.port), adminPort);

    const inFile = DOCS.filter((d) => d.file === u.doc.file);
    const role = inFile.find((d) => d.kind === 'ClusterRole')!;
    assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] }]);
    const binding = inFile.find((d) => d.kind === 'ClusterRoleBinding')!;
    assert.equal(binding.roleRef?.name, role.metadata.name);
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: u.pod.serviceAccountName, namespace: u.doc.metadata.namespace }]);
    assert.ok(inFile.some((d) => d.kind === 'ServiceAccount' && d.metadata.name === u.pod.serviceAccountName));
    assert.ok(inFile.some((d) => d.kind === 'Namespace' && d.metadata.name === u.doc.metadata.namespace));
  });

  test('the CNI DaemonSet: cni-install with the ConfigMap, the host folders, and a config the plugin accepts', () => {
    const [u] = uses('cni-install');
    assert.ok(u !== undefined && u.doc.kind === 'DaemonSet');
    const argv = u.runs[0]!.argv;
    assert.ok(argv.includes('--watch'));
    const inFile = DOCS.filter((d) => d.file === u.doc.file);
    const cm = inFile.find((d) => d.kind === 'ConfigMap')!;
    const configPath = flagValue(argv, '--config')!;
    const cmMount = u.c.volumeMounts!.find((m) => configPath.startsWith(m.mountPath + '/'))!;
    assert.equal(u.pod.volumes?.find((v) => v.name === cmMount.name)?.configMap?.name, cm.metadata.name, '--config is a file of the ConfigMap');
    const key = configPath.slice(cmMount.mountPath.length + 1);
    const text = cm.data?.[key];
    assert.ok(text !== undefined, `the ConfigMap has key ${key}`);
    const hostRoot = flagValue(argv, '--host-root')!;
    for (const [flag, host] of [['--cni-conf-dir', '/etc/cni/net.d'], ['--cni-bin-dir', '/opt/cni/bin'], ['--bundle-dir', '/opt/bpfmesh']] as const) {
      const dir = flagValue(argv, flag)!;
      assert.equal(dir, hostRoot + host);
      const m: { name: string } = u.c.volumeMounts!.find((x) => x.mountPath === dir)!;
      assert.equal(u.pod.volumes?.find((v) => v.name === m.name)?.hostPath?.path, host, `${flag} is the host's ${host}`);
    }
    // What cni-install reads, and what the plugin then gets from the conflist.
    const tmp = join(REPO_ROOT, 'dist', `.cni-config-${process.pid}.json`);
    writeFileSync(tmp, text);
    try {
      const entry = readPluginConfig(tmp);
      const conf = JSON.parse(JSON.stringify({ cniVersion: '1.0.0', ...entry }).replace('__KUBECONFIG_FILEPATH__', '/etc/cni/net.d/ZZZ-bpfmesh-cni-kubeconfig')) as Json;
      const parsed = parseNetConf(conf);
      assert.equal(parsed.type, 'bpfmesh-cni');
      assert.equal(parsed.policy.proxyUid, 2102);
      assert.equal(parsed.kubernetes?.kubeconfig, '/etc/cni/net.d/ZZZ-bpfmesh-cni-kubeconfig');
    } finally {
      rmSync(tmp, { force: true });
    }
    const role = inFile.find((d) => d.kind === 'ClusterRole')!;
    assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['pods'], verbs: ['get'] }]);
    assert.deepEqual(u.c.securityContext?.capabilities, { drop: ['ALL'] }, 'the installer writes files, needing no capability');
  });

  test('node-proxy: the agent serves the CNI plugin\'s calls on a hostPath socket, the very one the plugin\'s config names', () => {
    const agent = USES.find((u) => u.doc.file === 'node-proxy' && u.runs.some((r) => r.command === 'node'));
    const installer = USES.find((u) => u.doc.file === 'node-proxy' && u.runs.some((r) => r.command === 'cni-install'));
    assert.ok(agent !== undefined && installer !== undefined, 'node-proxy: both the agent and the CNI installer');
    // The agent's side: --cni-socket inside a hostPath mount; the host path of the socket is what the host's plugin sees.
    const socket = flagValue(agent.runs[0]!.argv, '--cni-socket');
    assert.ok(socket !== undefined, 'node-proxy: the agent runs with --cni-socket');
    const mounts = (agent.c.volumeMounts ?? []).filter((m) => socket.startsWith(m.mountPath + '/'));
    const m = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
    assert.ok(m !== undefined, `--cni-socket ${socket} is on no volume of the agent`);
    const hostDir = agent.pod.volumes?.find((v) => v.name === m.name)?.hostPath?.path;
    assert.ok(hostDir !== undefined, `--cni-socket ${socket} is on ${m.name}, not a hostPath: the host's plugin cannot reach it`);
    const onHost = hostDir + socket.slice(m.mountPath.length);
    // Nothing else of the agent (its tokens) may land in that host folder.
    const tmp = envOf(agent.c, 'TMPDIR');
    assert.ok(tmp !== undefined && !(tmp + '/').startsWith(m.mountPath + '/'), `TMPDIR ${tmp}: pods' tokens would go to the host's ${hostDir}`);
    // The plugin's side: the ConfigMap entry cni-install reads, and the shim it writes from it.
    const configPath = flagValue(installer.runs[0]!.argv, '--config')!;
    const cmMount = installer.c.volumeMounts!.find((x) => configPath.startsWith(x.mountPath + '/'))!;
    const cmName = installer.pod.volumes?.find((v) => v.name === cmMount.name)?.configMap?.name;
    const cm = DOCS.find((d) => d.file === 'node-proxy' && d.kind === 'ConfigMap' && d.metadata.name === cmName);
    const text = cm?.data?.[configPath.slice(cmMount.mountPath.length + 1)];
    assert.ok(text !== undefined, 'node-proxy: the CNI config');
    const entry = JSON.parse(text) as Json;
    assert.equal(cniSocketOf(entry), onHost, 'the plugin\'s cni_socket is not where the agent listens on the host');
    assert.match(renderShim('/opt/bpfmesh', cniSocketOf(entry)), new RegExp(`BPFMESH_CNI_SOCKET=\\$\\{BPFMESH_CNI_SOCKET:-'${onHost}'\\}`));
    // Exactly one Namespace (the agent's); the installer's service account in it.
    assert.equal(DOCS.filter((d) => d.file === 'node-proxy' && d.kind === 'Namespace').length, 1);
    assert.equal(installer.doc.metadata.namespace, agent.doc.metadata.namespace);
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ');
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  const allowed = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('!'))
    .map((l) => l.slice(1).replace(/\/$/, ''));

  test('it copies from the context only paths that exist and .dockerignore lets through', () => {
    const copies = lines.filter((l) => /^COPY\s/.test(l) && !/--from=/.test(l));
    assert.ok(copies.length >= 5);
    for (const l of copies) {
      const parts = l.split(/\s+/).slice(1).filter((p) => !p.startsWith('--'));
      for (const src of parts.slice(0, -1)) {
        assert.ok(existsSync(join(REPO_ROOT, src)), `COPY ${src}: not in the repo`);
        assert.ok(allowed.some((a) => src === a || src.startsWith(a + '/')), `COPY ${src}: excluded by .dockerignore`);
      }
    }
    for (const a of allowed) assert.ok(existsSync(join(REPO_ROOT, a)), `.dockerignore lets through ${a}, which does not exist`);
  });

  test('the runtime stage takes the built artifacts, runs the one install script, as uid 2102, ENTRYPOINT bin/bpfmesh.js', () => {
    const fromBuild = lines.filter((l) => /^COPY\s+--from=build\s/.test(l));
    const srcs = fromBuild.flatMap((l) => l.split(/\s+/).slice(2, -1)).map((p) => p.replace(/^\/src\//, ''));
    for (const want of ['dist/src', 'build/Release/bpfmesh.node', 'build/bpf/intercept.bpf.o', 'build/bpf/inbound.bpf.o', 'proto', 'node_modules', 'bin', 'package.json']) {
      assert.ok(srcs.includes(want), `the runtime stage copies ${want}`);
      assert.ok(existsSync(join(REPO_ROOT, want)), `${want} is what a build produces (it exists here after npm install)`);
    }
    const modes = [...text.matchAll(/bash\s+\S*install-deps\.sh\s+([a-z]+)/g)].map((m) => m[1]!);
    assert.deepEqual(modes, ['build', 'image']);
    const script = readFileSync(join(REPO_ROOT, 'scripts/install-deps.sh'), 'utf8');
    for (const m of modes) assert.match(script, new RegExp(`^\\s+${m}\\) PKGS=`, 'm'), `install-deps.sh has mode ${m}`);
    // Node 24 LTS in both stages, the major CI installs and runs the suite on (scripts/install-node.sh),
    // and one package.json's engines accepts; node-gyp uses the image's headers (no download).
    const ciMajor = /^VERSION_24=(\d+)\./m.exec(readFileSync(join(REPO_ROOT, 'scripts/install-node.sh'), 'utf8'))?.[1];
    assert.equal(ciMajor, '24', 'scripts/install-node.sh pins a Node 24 release');
    assert.deepEqual(lines.filter((l) => l.startsWith('FROM')).map((l) => l.split(/\s+/)[1]), [`node:${ciMajor}-bookworm`, `node:${ciMajor}-bookworm-slim`]);
    assert.match(readFileSync(join(REPO_ROOT, '.ci/run'), 'utf8'), new RegExp(`install-node\\.sh --env ${ciMajor}\\b`), '.ci/run puts that Node first on PATH');
    const engines = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }).engines.node;
    assert.ok(Number(/(\d+)/.exec(engines)?.[1]) <= Number(ciMajor), `engines ${engines} accepts Node ${ciMajor}`);
    assert.ok(lines.some((l) => l === 'ENV npm_config_nodedir=/usr/local'), 'the build stage points node-gyp at the image\'s own headers');
    assert.equal(lines.filter((l) => l.startsWith('USER')).at(-1), 'USER 2102:2102');
    const entry = lines.find((l) => l.startsWith('ENTRYPOINT'))!;
    const argv = JSON.parse(entry.slice('ENTRYPOINT'.length)) as string[];
    assert.deepEqual(argv, ['/app/bin/bpfmesh.js']);
    accessSync(join(REPO_ROOT, 'bin/bpfmesh.js'), constants.X_OK);
    const cmd = JSON.parse(lines.find((l) => l.startsWith('CMD'))!.slice(3)) as string[];
    assert.equal(usageOf(cmd[0]!).length > 0, true, 'the default CMD is a command');
  });
});
