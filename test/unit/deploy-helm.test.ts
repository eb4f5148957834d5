// deploy/helm/bpfmesh: the node-wide modes as a Helm chart, rendered with a
// real helm (scripts/install-kube-tools.sh). Its templates are the kustomize
// overlays' manifests with the image from values, so for each mode `helm
// template` with the defaults must give exactly the objects the overlay adds
// to the base (which deploy-manifests.test.ts validates against the API
// schemas); values change only what they name.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from '../../src/config/paths.js';
import { kubeToolSkipReason, runKubeTool } from '../helpers/kube-tools.js';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string }; spec?: Record<string, unknown> };

const CHART = join(REPO_ROOT, 'deploy/helm/bpfmesh');
const SKIP = kubeToolSkipReason('helm') || kubeToolSkipReason('kubectl');

function parse(text: string): Obj[] {
  return parseAllDocuments(text)
    .map((d) => {
      assert.deepEqual(d.errors, []);
      return d.toJS() as Obj | null;
    })
    .filter((o): o is Obj => o !== null);
}
const id = (o: Obj): string => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
const byId = (objs: Obj[]): Obj[] => [...objs].sort((a, b) => id(a).localeCompare(id(b)));
const helm = (...set: string[]): Obj[] => parse(runKubeTool('helm', ['template', 'bpfmesh', CHART, ...set.flatMap((s) => ['--set', s])]));

/** What the overlay adds to the base: its own objects. */
function overlayOwn(mode: string): Obj[] {
  const base = new Set(parse(runKubeTool('kubectl', ['kustomize', join(REPO_ROOT, 'deploy/base')])).map(id));
  return parse(runKubeTool('kubectl', ['kustomize', join(REPO_ROOT, 'deploy/overlays', mode)])).filter((o) => !base.has(id(o)));
}

const containers = (objs: Obj[]): { image: string; imagePullPolicy?: string }[] =>
  objs.filter((o) => o.kind === 'DaemonSet').flatMap((o) => (o.spec as { template: { spec: { containers: { image: string; imagePullPolicy?: string }[] } } }).template.spec.containers);

describe('deploy/helm/bpfmesh', { skip: SKIP }, () => {
  test('helm lint --strict passes', () => {
    assert.match(runKubeTool('helm', ['lint', '--strict', CHART]), /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  for (const mode of ['node', 'cni']) {
    test(`mode=${mode} with the defaults renders exactly what deploy/overlays/${mode} adds to the base`, () => {
      const fromHelm = helm(`mode=${mode}`);
      assert.ok(fromHelm.some((o) => o.kind === 'DaemonSet' && o.metadata.name === `bpfmesh-${mode}`));
      assert.deepEqual(byId(fromHelm), byId(overlayOwn(mode)));
    });
  }

  test('values change what they name: the image, its pull policy, the namespace object', () => {
    const objs = helm('mode=cni', 'image.repository=registry.example/mesh/bpfmesh', 'image.tag=1.2.3', 'image.pullPolicy=Always', 'createNamespace=false');
    const cs = containers(objs);
    assert.ok(cs.length > 0);
    for (const c of cs) assert.deepEqual([c.image, c.imagePullPolicy], ['registry.example/mesh/bpfmesh:1.2.3', 'Always']);
    assert.equal(objs.filter((o) => o.kind === 'Namespace').length, 0);
    assert.deepEqual(byId(objs.filter((o) => o.kind !== 'DaemonSet')), byId(overlayOwn('cni').filter((o) => o.kind !== 'DaemonSet' && o.kind !== 'Namespace')));
  });

  test('a mode the chart does not have fails the render with what to use', () => {
    assert.throws(() => helm('mode=init-container'), /mode "init-container": use node .* or cni/);
  });
});
