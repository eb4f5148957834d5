// bpfmesh cni-install: what the CNI DaemonSet's container runs. Puts the
// bpfmesh-cni plugin on its node (bundle, shim, conflist entry) and, with
// --watch, keeps it there while the primary CNI rewrites its config.
import { REPO_ROOT } from '../config/paths.js';
import { apiServerFromEnv, DEFAULTS, parseCniInstallFlags } from '../config/cni-install-flags.js';
import { install, readPluginConfig, readServiceAccount, uninstall, watchAndInstall, type InstallerOptions, type InstallResult } from '../cni/installer.js';
import { createLogger, type Logger } from '../log/logger.js';

export const usage = `bpfmesh cni-install [flags]   install the bpfmesh-cni plugin on this node (run by the CNI DaemonSet)

  --config FILE                 the plugin entry, linkerd-cni style JSON (linkerd, kubernetes, log_level); required to install
  --cni-conf-dir DIR            the host's CNI config dir, mounted here (${DEFAULTS.cniConfDir})
  --cni-bin-dir DIR             the host's CNI plugin dir, mounted here; gets the bpfmesh-cni shim (${DEFAULTS.cniBinDir})
  --bundle-dir DIR              where Node and bpfmesh are copied for the host to run (${DEFAULTS.bundleDir})
  --host-root DIR               where the host's / is mounted here; stripped from the paths written for the host (${DEFAULTS.hostRoot}; "" = none)
  --source DIR                  the install to copy (default: this one)
  --service-account-dir DIR     token and ca.crt for the plugin's kubeconfig, when the config uses __KUBECONFIG_FILEPATH__
                                (${DEFAULTS.serviceAccountDir})
  --watch                       stay running: re-apply when the config dir changes and every --interval
  --interval SECONDS            re-check period with --watch (${DEFAULTS.intervalSeconds})
  --uninstall                   remove the conflist entry, the shim, the kubeconfig and the bundle
  --log-format plain|json, --log-level LEVEL
`;

function logResult(log: Logger, r: InstallResult): void {
  const changed = r.bundle.copied + r.bundle.removed > 0 || r.shimChanged || r.kubeconfigChanged || r.confChanged;
  log[changed ? 'info' : 'debug'](
    {
      confFile: r.confFile,
      ...(r.converted !== undefined ? { convertedFrom: r.converted } : {}),
      confChanged: r.confChanged,
      shimChanged: r.shimChanged,
      kubeconfigChanged: r.kubeconfigChanged,
      bundleCopied: r.bundle.copied,
      bundleRemoved: r.bundle.removed,
    },
    changed ? 'bpfmesh-cni installed' : 'bpfmesh-cni already in place',
  );
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseCniInstallFlags(argv);
  const log = createLogger(flags).child({ component: 'cni-install' });
  const opts: InstallerOptions = {
    sourceDir: flags.source ?? REPO_ROOT,
    nodeBinary: process.execPath,
    bundleDir: flags.bundleDir,
    cniBinDir: flags.cniBinDir,
    cniConfDir: flags.cniConfDir,
    hostRoot: flags.hostRoot,
    serviceAccount: () => readServiceAccount(flags.serviceAccountDir, apiServerFromEnv()),
  };
  if (flags.uninstall) {
    const r = uninstall(opts);
    log.info({ ...r }, 'bpfmesh-cni removed');
    return 0;
  }
  opts.pluginConfig = readPluginConfig(flags.config!);
  if (!flags.watch) {
    logResult(log, install(opts));
    return 0;
  }
  // SIGTERM ends the watch and leaves the plugin installed: a DaemonSet
  // rollout must not open a window in which new pods start unmeshed.
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  let lastError = '';
  await watchAndInstall(opts, flags.intervalMs, stop.signal, {
    onApply: (r) => {
      lastError = '';
      logResult(log, r);
    },
    onError: (err) => {
      // The same failure every round (no CNI config yet) is logged once.
      const msg = (err as Error).message;
      if (msg !== lastError) log.warn({ code: (err as { code?: string }).code, err: msg }, 'bpfmesh-cni not installed yet; retrying');
      lastError = msg;
    },
  });
  log.info('stopped watching; the plugin stays installed');
  return 0;
}
