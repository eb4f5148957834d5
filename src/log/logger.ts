// pino, with a small plain-text formatter (plain.ts). Short CLI commands use
// cli-logger.ts instead, which writes the same lines without loading pino.
import pino, { type Logger } from 'pino';
import type { LogOptions } from '../config/pod-flags.js';
import { plainLineOf } from './plain.js';

export type { Logger };

/** The logging calls a library function needs: pino's Logger and the CLI's light logger (cli-logger.ts) both fit. */
export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}
export interface LogFns {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
}

/** Logs go to stderr, so stdout stays for what a command prints (tables, JSON). */
export function createLogger(opts: LogOptions, fd = 2): Logger {
  const dest = pino.destination({ fd, sync: true });
  if (opts.logFormat === 'json') return pino({ level: opts.logLevel, base: { pid: process.pid } }, dest);
  const plain = { write: (s: string): void => void dest.write(plainLineOf(s)) };
  return pino({ level: opts.logLevel, base: null }, plain);
}
