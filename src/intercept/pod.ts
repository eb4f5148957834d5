// Resolving a pod (cgroup + network namespace) from flags, and the folder
// its pins live in.
import { closeSync, openSync, statSync, statfsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { BpfmeshError, ErrorCodes, errorCode } from '../errors.js';
import { PIN_DIR_NAME } from '../config/paths.js';
import type { PodTarget } from '../config/pod-flags.js';
import { native } from '../bpf/native.js';
import { isCgroup2, ownCgroup } from './mounts.js';

const NSFS_MAGIC = 0x6e736673;
const NETNS_DIRS = new Set(['/run/netns', '/var/run/netns']);

export interface Pod {
  name: string;
  cgroupPath: string;
  netnsPath: string;
  pinDir: string;
}

export function pinRoot(bpffs: string): string {
  return join(bpffs, PIN_DIR_NAME);
}

export function checkNetns(path: string): void {
  let type: number;
  try {
    type = statfsSync(path).type;
  } catch (err) {
    const code = errorCode(err);
    if (code === 'EACCES' || code === 'EPERM') throw new BpfmeshError(ErrorCodes.PERMISSION, `cannot read network namespace ${path}: run as root`);
    throw new BpfmeshError(ErrorCodes.NO_NETNS, `network namespace ${path} does not exist; give --netns /run/netns/NAME or /proc/PID/ns/net`);
  }
  if (type !== NSFS_MAGIC) {
    throw new BpfmeshError(ErrorCodes.NO_NETNS, `${path} is not a network namespace file; give --netns /run/netns/NAME or /proc/PID/ns/net`);
  }
}

export function checkCgroup(path: string): void {
  let isDir = false;
  try {
    isDir = statSync(path).isDirectory();
  } catch {
    /* reported below */
  }
  if (!isDir) throw new BpfmeshError(ErrorCodes.NO_CGROUP, `cgroup ${path} does not exist; give --cgroup <a cgroup v2 directory>`);
  if (!isCgroup2(path)) {
    throw new BpfmeshError(ErrorCodes.NO_CGROUP, `${path} is not in a cgroup v2 filesystem; bpfmesh attaches to cgroup v2 only`);
  }
}

/** Default pod name: the netns name for /run/netns/NAME, else netns-<inode>. */
export function defaultPodName(netnsPath: string): string {
  if (NETNS_DIRS.has(dirname(netnsPath))) return basename(netnsPath).replace(/[^A-Za-z0-9_.-]/g, '_');
  return `netns-${statSync(netnsPath).ino}`;
}

/** Resolves names and paths; checks that cgroup and netns exist. Touches nothing. */
export function resolvePod(target: PodTarget): Pod {
  const netnsPath = target.netns ?? '/proc/self/ns/net';
  checkNetns(netnsPath);
  const cgroupPath = (target.cgroup ?? ownCgroup()).replace(/\/+$/, '');
  checkCgroup(cgroupPath);
  const name = target.podName ?? defaultPodName(netnsPath);
  if (name === 'node' || name === 'node_lock') throw new BpfmeshError(ErrorCodes.BAD_FLAG, `pod name "${name}" is reserved for the node-wide install; give another --pod-name`);
  return { name, cgroupPath, netnsPath, pinDir: join(pinRoot(target.bpffs), name) };
}

/** Opens a file for its fd (cgroup dir, netns), runs fn, closes it. */
export function withFd<T>(path: string, what: string, fn: (fd: number) => T): T {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    const code = errorCode(err);
    const ec = code === 'EACCES' || code === 'EPERM' ? ErrorCodes.PERMISSION : ErrorCodes.NOT_FOUND;
    throw new BpfmeshError(ec, `cannot open ${what} ${path}: ${(err as Error).message}`);
  }
  try {
    return fn(fd);
  } finally {
    closeSync(fd);
  }
}

export function netnsCookieOf(netnsPath: string): bigint {
  return withFd(netnsPath, 'network namespace', (fd) => native().netnsCookie(fd));
}

/** The interface addresses inside a network namespace (a pod's own IPs, read when it is installed or enrolled). */
export function netnsAddressesOf(netnsPath: string): string[] {
  return withFd(netnsPath, 'network namespace', (fd) => native().netnsAddresses(fd));
}
