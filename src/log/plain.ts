// The plain-text log line (no pino-pretty dependency): one line per record,
// "TIME LEVEL component: message key=value ...", made from a pino JSON record.
const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'component']);

export function plainLineOf(json: string): string {
  const rec = JSON.parse(json) as Record<string, unknown>;
  const level = LEVEL_NAMES[rec['level'] as number] ?? String(rec['level']);
  const comp = typeof rec['component'] === 'string' ? `${rec['component']}: ` : '';
  const fields = Object.entries(rec)
    .filter(([k]) => !SKIP.has(k))
    .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`);
  return `${new Date(rec['time'] as number).toISOString()} ${level.padEnd(5)} ${comp}${typeof rec['msg'] === 'string' ? rec['msg'] : ''}${fields.length ? ' ' + fields.join(' ') : ''}\n`;
}
