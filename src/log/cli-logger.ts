// A pino-compatible logger for short-lived CLI commands (init): loading pino
// costs ~30 ms of a ~150 ms process, more than the work init does. It writes
// the same lines as createLogger in logger.ts: pino's JSON record layout
// (level, time, pid, bindings, fields, msg) and the same plain text format.
import { writeSync } from 'node:fs';
import type { LogOptions } from '../config/pod-flags.js';
import type { LogFns } from './logger.js';
import { plainLineOf } from './plain.js';

const LEVELS = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 } as const;
type LevelName = keyof typeof LEVELS;

export interface CliLogger extends LogFns {
  child(bindings: Record<string, unknown>): CliLogger;
}

/** Like pino's std err serializer: type, message, stack and the error's own fields (code, errno...). */
function serializeError(err: Error): Record<string, unknown> {
  return { type: err.constructor.name, message: err.message, stack: err.stack, ...(err as unknown as Record<string, unknown>) };
}

/** JSON.stringify as pino uses it; what JSON cannot hold (bigint, cycles) falls back to strings. */
function jsonOf(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    const seen = new WeakSet<object>();
    return JSON.stringify(value, (_k, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (typeof v === 'object' && v !== null) {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      return v;
    });
  }
}

/** One record's fields after the time: bindings first, then the call's own (pino's order). */
function fieldsJson(obj: Record<string, unknown>): string {
  let out = '';
  for (const key of Object.keys(obj)) {
    let value = obj[key];
    if (value === undefined || typeof value === 'function') continue;
    if (key === 'err' && value instanceof Error) value = serializeError(value);
    if (typeof value === 'number' && !Number.isFinite(value)) value = null;
    out += `,${JSON.stringify(key)}:${jsonOf(value)}`;
  }
  return out;
}

function build(opts: LogOptions, fd: number, chindings: string): CliLogger {
  const threshold = opts.logLevel === 'silent' ? Infinity : LEVELS[opts.logLevel];
  const write = (line: string): void => {
    writeSync(fd, opts.logFormat === 'json' ? line : plainLineOf(line));
  };
  const at =
    (level: LevelName) =>
    (objOrMsg: unknown, msg?: string): void => {
      const num = LEVELS[level];
      if (num < threshold) return;
      let obj: Record<string, unknown> | undefined;
      let text: unknown = msg;
      if (objOrMsg instanceof Error) {
        obj = { err: objOrMsg };
        text = msg ?? objOrMsg.message;
      } else if (typeof objOrMsg === 'object' && objOrMsg !== null) {
        obj = objOrMsg as Record<string, unknown>;
      } else {
        text = objOrMsg;
      }
      const msgJson = text === undefined ? '' : `,"msg":${jsonOf(text)}`;
      write(`{"level":${num},"time":${Date.now()}${chindings}${obj ? fieldsJson(obj) : ''}${msgJson}}\n`);
    };
  return {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: (bindings) => build(opts, fd, chindings + fieldsJson(bindings)),
  };
}

/** Logs go to stderr, written synchronously (the process exits right after). */
export function createCliLogger(opts: LogOptions, fd = 2): CliLogger {
  return build(opts, fd, opts.logFormat === 'json' ? `,"pid":${process.pid}` : '');
}
