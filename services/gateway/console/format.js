// Statuses, times and rates in words.

const WORDS = {
  pending: 'Pending',
  enqueuing: 'Enqueuing batches',
  running: 'Running',
  succeeded: 'Succeeded',
  completed_with_failures: 'Completed with failures',
  enqueue_failed: 'Enqueue failed',
  worker_error: 'Worker error',
  worker_oom: 'Worker out of memory',
  timed_out: 'Timed out',
  stopped: 'Stopped',
  unexpected_error: 'Unexpected error',
};
export const STATUSES = Object.keys(WORDS);
const IN_PROGRESS = new Set(['pending', 'enqueuing', 'running']);

export const statusWords = (status) => WORDS[status] ?? status;
export const isFinal = (status) => !IN_PROGRESS.has(status);

export function duration(seconds) {
  if (!Number.isFinite(seconds)) return '–'; // not known (no ETA yet, no end time)
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const age = (time) => (time ? `${duration((Date.now() - Date.parse(time)) / 1000)} ago` : '–');
export const rate = (perSecond) => `${perSecond.toFixed(perSecond < 10 ? 2 : 0)} batches/s`;
export const clock = (time) => (time ? new Date(time).toLocaleTimeString() : '–');

// Batches done (succeeded or dead-lettered) of the total, which is unknown while the input is being cut; each batch
// split in two (on_failure bisect) adds one.
export function progress(status) {
  const counts = status.batch_counts;
  const total = status.total_batch_count == null ? null : status.total_batch_count + counts.split;
  return { done: counts.succeeded + counts.dead_lettered, total };
}
