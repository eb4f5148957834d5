// A lock across processes on one node (CNI ADDs run concurrently with each
// other and with the agent): flock(2) on a directory in bpffs, which every
// installer of the node shares. The kernel releases a flock when its file
// closes, also when the holder dies (SIGKILL, OOM), so there is no
// staleness to guess. The directory is removed by the holder on release;
// a waiter that then gets the lock on the removed directory sees that the
// path no longer names it and starts over.
import { closeSync, constants, fstatSync, mkdirSync, openSync, rmdirSync, statSync } from 'node:fs';
import { BpfmeshError, ErrorCodes, errorCode, withContext } from '../errors.js';
import { native } from '../bpf/native.js';

/** Takes the lock on `dir` (made if missing), waiting up to timeoutMs; returns the fd to pass to releaseDirLock. */
export function takeDirLock(dir: string, timeoutMs: number): number {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      mkdirSync(dir);
    } catch (err) {
      if (errorCode(err) !== 'EEXIST') throw withContext(err, `making the lock directory ${dir}`);
    }
    let fd: number;
    try {
      fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (err) {
      if (errorCode(err) === 'ENOENT') continue; // released and removed meanwhile
      throw withContext(err, `opening the lock directory ${dir}`);
    }
    let held = false;
    try {
      held = native().flockExclusive(fd, Math.max(0, deadline - Date.now()));
      if (held && sameInode(fd, dir)) return fd;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    closeSync(fd);
    if (!held) {
      throw new BpfmeshError(ErrorCodes.BUSY, `another bpfmesh process has held the node lock ${dir} for over ${timeoutMs} ms; retry (a holder that dies releases it at once)`);
    }
  }
}

/** Removes the lock directory and drops the lock (closing the fd drops it). */
export function releaseDirLock(dir: string, fd: number): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not ours to fail on: the next taker reuses it */
  }
  closeSync(fd);
}

export function withDirLock<T>(dir: string, timeoutMs: number, fn: () => T): T {
  const fd = takeDirLock(dir, timeoutMs);
  try {
    return fn();
  } finally {
    releaseDirLock(dir, fd);
  }
}

function sameInode(fd: number, dir: string): boolean {
  try {
    const a = fstatSync(fd);
    const b = statSync(dir);
    return a.ino === b.ino && a.dev === b.dev;
  } catch {
    return false; // removed by the holder we waited for
  }
}
