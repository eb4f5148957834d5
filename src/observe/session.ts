// bpfmesh observe: one observation. It takes each selected pin folder's
// ring buffer for itself (flock on the folder: a ring has one consumer, two
// would split its events), holds the folder's lease (mesh_obs_cfg) while it
// runs, and turns observation off when it ends. A killed observer's lease
// expires by itself after LEASE_MS.
import { closeSync, constants, existsSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { BpfmeshError, ErrorCodes, withContext } from '../errors.js';
import * as c from '../bpf/codecs.js';
import { native, type NativeRingReader } from '../bpf/native.js';
import { TypedMap } from '../bpf/typed-map.js';
import { MapNames } from '../intercept/layout.js';
import { mapsDirOf } from '../intercept/versions.js';
import { podNames, type Selection } from './sources.js';
import { resolveEvent, type ObservedEvent } from './events.js';

/** How long a lease runs past its last refresh: a killed observer stops the events within this. */
export const LEASE_MS = 5_000;
export const REFRESH_MS = 1_000;

interface Held {
  pinDir: string;
  lockFd: number;
  cfg: TypedMap<number, { untilNs: bigint; netnsCookie: bigint }>;
  drops: TypedMap<number, bigint>;
  dropsAtStart: bigint;
}

const monotonicNs = (): bigint => process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns

function requireRingbuf(): void {
  let ok: boolean;
  try {
    ok = native().probeMapType('ringbuf');
  } catch {
    ok = true; // cannot probe (permissions): opening the ring says what is wrong
  }
  if (!ok) throw new BpfmeshError(ErrorCodes.KERNEL_FEATURE, 'this kernel has no BPF ring buffer (BPF_MAP_TYPE_RINGBUF, Linux 5.8+), so bpfmesh observe cannot run here; the kernel counters (bpfmesh inspect) still work');
}

function take(pinDir: string): Held {
  const maps = mapsDirOf(pinDir);
  if (!existsSync(join(maps, MapNames.events)) || !existsSync(join(maps, MapNames.obsCfg))) {
    throw new BpfmeshError(ErrorCodes.NOT_INSTALLED, `${pinDir} was installed by a bpfmesh without observe (no ${MapNames.events} pin); run "bpfmesh init" for the pod again, or restart the node agent, to load the current programs`);
  }
  const lockFd = openSync(pinDir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    if (!native().flockExclusive(lockFd, 0)) {
      throw new BpfmeshError(ErrorCodes.BUSY, `another "bpfmesh observe" is reading ${pinDir}; a ring buffer has one reader, so stop that one first (a killed one lets go at once)`);
    }
    const cfg = new TypedMap(native().openPinnedMap(join(maps, MapNames.obsCfg)), c.u32Key, c.obsConfig);
    const drops = new TypedMap(native().openPinnedMap(join(maps, MapNames.obsDrops)), c.u32Key, c.u64Sum);
    return { pinDir, lockFd, cfg, drops, dropsAtStart: drops.get(0) ?? 0n };
  } catch (err) {
    closeSync(lockFd);
    throw err;
  }
}

export interface ObservationOptions {
  bpffs: string;
  /** Called with each kept event, in ring order per folder. */
  onEvent(ev: ObservedEvent): void;
}

export class Observation {
  readonly #held: Held[] = [];
  readonly #reader: NativeRingReader;
  readonly #sel: Selection;
  readonly #opts: ObservationOptions;
  readonly #wallOffsetNs: bigint;
  #names: Map<bigint, string>;
  #namesReadAt = 0;
  #timer: NodeJS.Timeout | undefined;
  #poller: NodeJS.Timeout | undefined;
  #closed = false;
  #received = 0;
  #lost: bigint | undefined;

  constructor(sel: Selection, opts: ObservationOptions) {
    requireRingbuf();
    this.#sel = sel;
    this.#opts = opts;
    this.#wallOffsetNs = BigInt(Date.now()) * 1_000_000n - monotonicNs();
    try {
      for (const s of sel.sources) this.#held.push(take(s.pinDir));
      this.#reader = native().openRingReader(sel.sources.map((s) => join(mapsDirOf(s.pinDir), MapNames.events)));
    } catch (err) {
      this.#release();
      throw withContext(err, `observing ${sel.what}`);
    }
    this.#names = podNames(opts.bpffs);
    this.#namesReadAt = Date.now();
  }

  /**
   * Turns observation on and delivers events until close(): every
   * OBS_POLL_MS, and at once when the kernel wakes the reader (a ring a
   * quarter full; see obs_submit in bpf/observe.h).
   */
  start(): void {
    this.#refresh();
    this.#timer = setInterval(() => this.#refresh(), REFRESH_MS);
    this.#poller = setInterval(() => this.drain(), c.OBS_POLL_MS);
    this.#reader.start((bufs) => this.#deliver(bufs));
  }

  /** Turns observation on without the event-driven reader (poll with drain()). */
  startPolling(): void {
    this.#refresh();
    this.#timer = setInterval(() => this.#refresh(), REFRESH_MS);
  }

  /** Delivers what is in the rings now. */
  drain(): void {
    this.#deliver(this.#reader.consume());
  }

  /** Events lost to a full ring since this observation started, summed over its folders. */
  dropped(): bigint {
    if (this.#lost !== undefined) return this.#lost;
    return this.#held.reduce((sum, h) => sum + ((h.drops.get(0) ?? 0n) - h.dropsAtStart), 0n);
  }

  /** Turns observation off (this observer is the folders' only one), delivers what is left, lets go. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#poller !== undefined) clearInterval(this.#poller);
    for (const h of this.#held) {
      try {
        h.cfg.set(0, { untilNs: 0n, netnsCookie: 0n });
      } catch {
        /* the folder was reset meanwhile: nothing left to turn off */
      }
    }
    try {
      this.#deliver(this.#reader.consume());
      this.#lost = this.dropped();
    } finally {
      this.#release();
    }
  }

  #refresh(): void {
    const until = monotonicNs() + BigInt(LEASE_MS) * 1_000_000n;
    // The kernel leaves other pods' events out (the folder has one observer: this one).
    for (const h of this.#held) h.cfg.set(0, { untilNs: until, netnsCookie: this.#sel.netnsCookie ?? 0n });
  }

  #podOf(cookie: bigint): string {
    let name = this.#names.get(cookie);
    if (name === undefined && Date.now() - this.#namesReadAt > 1_000) {
      this.#names = podNames(this.#opts.bpffs); // a pod enrolled after start
      this.#namesReadAt = Date.now();
      name = this.#names.get(cookie);
    }
    return name ?? `netns-cookie-${cookie}`;
  }

  /** Events read from the rings, before the pod filter (the kernel applies it first). */
  get received(): number {
    return this.#received;
  }

  #deliver(bufs: Buffer[]): void {
    this.#received += bufs.length;
    for (const b of bufs) {
      if (b.length < c.obsEvent.size) continue;
      const e = c.obsEvent.decode(b);
      if (this.#sel.netnsCookie !== null && e.netnsCookie !== this.#sel.netnsCookie) continue;
      this.#opts.onEvent(resolveEvent(e, this.#podOf(e.netnsCookie), this.#wallOffsetNs));
    }
  }

  #release(): void {
    // A reader opened before a failure is closed by whoever holds it; here only the folders.
    try {
      (this.#reader as NativeRingReader | undefined)?.close();
    } catch {
      /* already closed */
    }
    for (const h of this.#held.splice(0)) {
      h.cfg.close();
      h.drops.close();
      closeSync(h.lockFd);
    }
  }
}
