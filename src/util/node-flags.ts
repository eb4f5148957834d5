// V8 flags the proxy relies on, read from how Node was started. The image
// sets NODE_OPTIONS=--max-semi-space-size=4 (Dockerfile); a proxy started
// another way without it grows 16-32 MiB semi-spaces under load: more RSS,
// and with mTLS a mark-compact storm (README, Benchmarks: mTLS).

/** The value of --max-semi-space-size (V8 also takes underscores) in Node's flags or NODE_OPTIONS, if set. */
export function maxSemiSpaceSize(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  const args = [...(nodeOptions ?? '').split(/\s+/).filter((a) => a !== ''), ...execArgv];
  let found: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const m = /^--max[-_]semi[-_]space[-_]size(?:=(.*))?$/.exec(args[i]!);
    if (m === null) continue;
    // execArgv comes last: Node's own flags win over NODE_OPTIONS, so the last one counts.
    found = m[1] ?? args[i + 1];
  }
  return found;
}

/** What the proxy logs (once, at start) when this process runs without the cap; undefined when it has it. */
export function uncappedYoungGenerationWarning(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env['NODE_OPTIONS']): string | undefined {
  if (maxSemiSpaceSize(execArgv, nodeOptions) !== undefined) return undefined;
  return "V8's young generation is not capped: set NODE_OPTIONS=--max-semi-space-size=4 as the image does (without it the RSS after load is higher, and TLS proxies collect garbage far more often; README, Benchmarks)";
}
