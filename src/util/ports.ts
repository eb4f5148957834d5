// Port lists as proxy-init takes them ("4190,4191,8000-8100") and their
// decomposition into bit prefixes for the LPM trie that holds port rules.
import { BpfmeshError, ErrorCodes } from '../errors.js';

export interface PortRange {
  lo: number;
  hi: number;
}

export interface PortPrefix {
  /** The first port of the block. */
  port: number;
  /** How many leading bits of the 16-bit port are fixed (16 = a single port). */
  bits: number;
}

export function parsePort(text: string, flag: string): number {
  const t = text.trim();
  if (!/^\d{1,5}$/.test(t) || Number(t) < 1 || Number(t) > 65535) {
    throw new BpfmeshError(ErrorCodes.BAD_PORT, `${flag}: "${text}" is not a port (1-65535)`);
  }
  return Number(t);
}

/** "80,443,8000-8100" -> ranges. Empty text -> no ranges. */
export function parsePortList(text: string, flag: string): PortRange[] {
  const out: PortRange[] = [];
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (item === '') continue;
    const dash = item.indexOf('-');
    if (dash < 0) {
      const p = parsePort(item, flag);
      out.push({ lo: p, hi: p });
      continue;
    }
    const lo = parsePort(item.slice(0, dash), flag);
    const hi = parsePort(item.slice(dash + 1), flag);
    if (lo > hi) {
      throw new BpfmeshError(ErrorCodes.BAD_PORT_RANGE, `${flag}: range "${item}" ends before it starts; write it low-high`);
    }
    out.push({ lo, hi });
  }
  return out;
}

export function formatPortRange(r: PortRange): string {
  return r.lo === r.hi ? String(r.lo) : `${r.lo}-${r.hi}`;
}

/** The fewest aligned power-of-two blocks that cover lo..hi exactly. */
export function rangeToPrefixes(lo: number, hi: number): PortPrefix[] {
  const out: PortPrefix[] = [];
  let start = lo;
  while (start <= hi) {
    let size = start === 0 ? 1 << 16 : start & -start; // largest block aligned at start
    while (start + size - 1 > hi) size >>= 1;
    out.push({ port: start, bits: 16 - Math.log2(size) });
    start += size;
  }
  return out;
}
