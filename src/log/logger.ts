// pino, with a small plain-text formatter (no pino-pretty dependency): one
// line per record, "LEVEL component: message key=value ...".
import pino, { type Logger } from 'pino';
import type { LogOptions } from '../config/pod-flags.js';

export type { Logger };

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'component']);

function plainLine(json: string): string {
  const rec = JSON.parse(json) as Record<string, unknown>;
  const level = LEVEL_NAMES[rec['level'] as number] ?? String(rec['level']);
  const comp = typeof rec['component'] === 'string' ? `${rec['component']}: ` : '';
  const fields = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `${new Date(rec['time'] as number).toISOString()} ${level.padEnd(5)} ${comp}${typeof rec['msg'] === 'string' ? rec['msg'] : ''}${fields.length ? ' ' + fields.join(' ') : ''}\n`;
}

/** Logs go to stderr, so stdout stays for what a command prints (tables, JSON). */
export function createLogger(opts: LogOptions, fd = 2): Logger {
  const dest = pino.destination({ fd, sync: true });
  if (opts.logFormat === 'json') return pino({ level: opts.logLevel, base: { pid: process.pid } }, dest);
  const plain = { write: (s: string): void => void dest.write(plainLine(s)) };
  return pino({ level: opts.logLevel, base: null }, plain);
}
