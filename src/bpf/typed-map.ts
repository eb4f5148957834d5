// A BPF map seen through codecs. Sizes are checked once, when the map is
// wrapped, so a header change that the codecs missed fails at load time.
import { BpfmeshError, ErrorCodes, withContext } from '../errors.js';
import type { Codec } from './codecs.js';
import { native, type MapInfo, type NativeMap } from './native.js';

export const UpdateFlags = { ANY: 0, NOEXIST: 1, EXIST: 2 } as const;

const PERCPU_TYPES = new Set(['percpu_hash', 'percpu_array', 'lru_percpu_hash', 'percpu_cgroup_storage']);

export class TypedMap<K, V> {
  readonly info: MapInfo;
  readonly #map: NativeMap;
  readonly #key: Codec<K>;
  readonly #value: Codec<V>;
  readonly #cpus: number;

  constructor(map: NativeMap, key: Codec<K>, value: Codec<V>) {
    this.#map = map;
    this.#key = key;
    this.#value = value;
    this.info = map.info();
    const percpu = PERCPU_TYPES.has(this.info.type);
    this.#cpus = percpu ? native().numPossibleCpus() : 1;
    if (this.info.keySize !== key.size || this.info.valueSize !== value.size) {
      throw new BpfmeshError(
        ErrorCodes.CODEC_MISMATCH,
        `map ${this.info.name}: kernel has key ${this.info.keySize} B / value ${this.info.valueSize} B, ` +
          `codecs ${key.name} ${key.size} B / ${value.name} ${value.size} B; bpf/bpfmesh.h and src/bpf/codecs.ts disagree — rebuild both (npm install)`,
      );
    }
  }

  get name(): string {
    return this.info.name;
  }

  get(key: K): V | null {
    const raw = this.#call('lookup', () => this.#map.lookup(this.#key.encode(key)));
    return raw === null ? null : this.#value.decode(raw);
  }

  set(key: K, value: V, flags: number = UpdateFlags.ANY): void {
    let raw = this.#value.encode(value);
    if (this.#isPercpu()) {
      // Per-CPU: the value goes to CPU 0, the other slots start at zero.
      const slot = Math.ceil(this.#value.size / 8) * 8;
      const all = Buffer.alloc(slot * this.#cpus);
      raw.copy(all, 0);
      raw = all;
    }
    this.#call('update', () => this.#map.update(this.#key.encode(key), raw, flags));
  }

  /** SOCKMAP/SOCKHASH: puts the socket behind fd under key. */
  setSocket(key: K, socketFd: number, flags: number = UpdateFlags.ANY): void {
    this.#call('update', () => this.#map.updateSocket(this.#key.encode(key), socketFd, flags));
  }

  delete(key: K): boolean {
    return this.#call('delete', () => this.#map.delete(this.#key.encode(key)));
  }

  *keys(): Generator<K> {
    let cur: Buffer | null = null;
    for (;;) {
      const prev: Buffer | null = cur;
      const next: Buffer | null = this.#call('next key', () => this.#map.nextKey(prev));
      if (next === null) return;
      yield this.#key.decode(next);
      cur = next;
    }
  }

  /** Every entry: batched where the kernel supports it for this map type, else key by key. */
  entries(): Array<[K, V]> {
    const batched = this.#entriesBatched();
    if (batched !== null) return batched;
    const out: Array<[K, V]> = [];
    let cur: Buffer | null = null;
    for (;;) {
      const prev: Buffer | null = cur;
      const next: Buffer | null = this.#call('next key', () => this.#map.nextKey(prev));
      if (next === null) return out;
      const raw = this.#call('lookup', () => this.#map.lookup(next)); // null: deleted meanwhile
      if (raw !== null) out.push([this.#key.decode(next), this.#value.decode(raw)]);
      cur = next;
    }
  }

  #entriesBatched(): Array<[K, V]> | null {
    const out: Array<[K, V]> = [];
    let token: Buffer | null = null;
    for (;;) {
      const prev: Buffer | null = token;
      const batch: ReturnType<NativeMap['lookupBatch']> = this.#call('lookup batch', () => this.#map.lookupBatch(prev, 256));
      if (batch === null) return token === null ? null : out;
      batch.keys.forEach((k, i) => out.push([this.#key.decode(k), this.#value.decode(batch.values[i]!)]));
      if (batch.outBatch === null) return out;
      token = batch.outBatch;
    }
  }

  /** Number of keys, for maps whose values cannot be read back (sockhash). */
  countKeys(filter: (k: K) => boolean = () => true): number {
    let n = 0;
    for (const k of this.keys()) if (filter(k)) n++;
    return n;
  }

  close(): void {
    this.#map.close();
  }

  #isPercpu(): boolean {
    return PERCPU_TYPES.has(this.info.type);
  }

  #call<T>(what: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw withContext(err, `map ${this.info.name}: ${what}`);
    }
  }
}
