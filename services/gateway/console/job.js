// One job, live through its event stream: status in words, progress, throughput, batches, workers, the hook,
// queue calls, dead letters, the stop and retry buttons its key may use, and its logs, followed while it runs.
import * as api from './api.js';
import { throughputChart } from './chart.js';
import { facts, h, table } from './dom.js';
import { age, clock, duration, isFinal, progress, rate, statusWords } from './format.js';

const LOG_LINES = 5000; // the oldest lines go beyond this

export async function jobPage(page, jobId) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const view = jobView(jobId, path);
  page.main.append(view.root);
  followLogs(page, path, view.logs);
  let shown = false;
  try {
    await api.readEvents(`${path}/events`, page.signal, (event, data) => {
      if (event === 'status') view.show(data.job_status);
      else view.problem(`The live view stopped: ${data.message}. Reload the page to resume it.`);
      shown = true;
    });
  } catch (error) {
    if (!shown || error.name === 'AbortError') throw error; // the page cannot be shown at all, or was left
    view.problem(`The live view stopped: ${error.message}. Reload the page to resume it.`);
  }
}

function jobView(jobId, path) {
  const chart = throughputChart();
  const status = h('p', { id: 'job-status', class: 'status', role: 'status' }, 'Loading…');
  const reason = h('p', { id: 'status-reason' });
  const bar = h('progress', { id: 'job-progress', 'aria-label': 'Batches done' });
  const pace = h('p', { id: 'pace' });
  const notice = h('p', { class: 'problem', role: 'alert' });
  const stop = h('button', { type: 'button', id: 'stop', hidden: true }, 'Stop the job');
  const retry = h('button', { type: 'button', id: 'retry', hidden: true }, 'Retry the failed batches');
  const details = h('div', { id: 'details', class: 'grid' });
  const deadLetters = h('div', { id: 'dead-letters' }, h('p', {}, 'None.'));
  const logs = h('pre', { id: 'logs', tabindex: 0, 'aria-label': 'Worker and dequeuer logs' });
  const root = h('article', { 'aria-labelledby': 'job-title' },
    h('h1', { id: 'job-title' }, `Job ${jobId}`),
    status, reason, h('div', { class: 'progress' }, bar, pace), notice,
    h('div', { class: 'actions' }, stop, retry),
    h('section', { 'aria-labelledby': 'chart-title' }, h('h2', { id: 'chart-title' }, 'Throughput'), chart.figure),
    details,
    h('section', { 'aria-labelledby': 'dead-title' }, h('h2', { id: 'dead-title' }, 'Dead-lettered batches'), deadLetters),
    h('section', { 'aria-labelledby': 'logs-title' }, h('h2', { id: 'logs-title' }, 'Logs'), logs));
  let deadLettersShown = '';

  stop.addEventListener('click', () => act(async () => {
    if (!confirm(`Stop job ${jobId}? Its workers are stopped and its batches not run.`)) return;
    show((await api.call('DELETE', path)).job_status);
  }));
  retry.addEventListener('click', () => act(async () => {
    const job = await api.call('POST', `${path}/retry`);
    location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
  }));

  async function act(action) {
    notice.textContent = '';
    try {
      await action();
    } catch (error) {
      notice.textContent = error.message;
    }
  }

  function show(s) {
    const final = isFinal(s.status);
    const { done, total } = progress(s);
    status.textContent = statusWords(s.status);
    status.dataset.status = s.status;
    reason.textContent = s.status_reason;
    if (total === null) bar.removeAttribute('value');
    else Object.assign(bar, { max: Math.max(total, 1), value: done });
    const time = final ? `ran ${duration((Date.parse(s.end_time) - Date.parse(s.start_time)) / 1000)}`
      : `ETA ${duration(s.pace.eta_s)} · started ${age(s.start_time)}`;
    pace.textContent = `${done} of ${total ?? '?'} batches · ${rate(s.pace.batches_per_s)} · ${time}`;
    chart.add(s.pace.batches_per_s);
    stop.hidden = final || !api.mayChange(s);
    retry.hidden = !final || s.batch_counts.dead_lettered === 0 || !api.mayChange(s);
    details.replaceChildren(...summary(s));
    const wanted = `${s.batch_counts.dead_lettered} ${final}`; // read again when the count changes, and at the end
    if (s.batch_counts.dead_lettered > 0 && wanted !== deadLettersShown) {
      deadLettersShown = wanted;
      showDeadLetters(path, deadLetters).catch((error) => { notice.textContent = error.message; });
    }
  }
  return { root, logs, show, problem: (text) => { notice.textContent = text; } };
}

function summary(s) {
  const b = s.batch_counts;
  const hook = s.hook.called
    ? `${s.hook.succeeded ? 'succeeded' : 'failed'} (HTTP ${s.hook.http_status}, ${s.hook.attempts} attempts)${s.hook.error ? `: ${s.hook.error}` : ''}`
    : 'not called yet';
  const job = [['API', s.api_name], ['Owner', s.owner ?? '–'], ['Workers', s.workers], ['Started', clock(s.start_time)],
    ['Ended', clock(s.end_time)], ['Hook', hook]];
  if (s.retry_of) job.push(['Retry of', h('a', { href: `#/jobs/${encodeURIComponent(s.retry_of)}` }, s.retry_of)]);
  const calls = Object.entries(s.queue_calls.by_operation).map(([operation, count]) => [operation, count]);
  const workers = s.workers_detail.map((w) => h('tr', {},
    h('td', {}, w.worker_id), h('td', {}, w.phase), h('td', {}, `${clock(w.last_heartbeat)} (${age(w.last_heartbeat)})`)));
  return [
    h('section', { 'aria-labelledby': 'job-facts' }, h('h2', { id: 'job-facts' }, 'Job'), facts(job, 'Job')),
    h('section', { 'aria-labelledby': 'batch-facts' }, h('h2', { id: 'batch-facts' }, 'Batches'),
      facts([['Succeeded', b.succeeded], ['In flight', b.in_flight], ['Pending', b.pending],
        ['Failed attempts', b.failed_attempts], ['Dead-lettered', b.dead_lettered], ['Split', b.split],
        ['Items succeeded', b.items_succeeded], ['Items dead-lettered', b.items_dead_lettered]], 'Batches')),
    h('section', { 'aria-labelledby': 'worker-facts' }, h('h2', { id: 'worker-facts' }, 'Workers'),
      facts([['Restarts', s.worker_restarts], ['Replaced (disruptions)', s.worker_disruptions]], 'Workers'),
      workers.length ? table('Workers and their last heartbeats', ['Worker', 'Phase', 'Last heartbeat'], workers) : null),
    h('section', { 'aria-labelledby': 'queue-facts' }, h('h2', { id: 'queue-facts' }, 'Queue calls'),
      facts([['Total', s.queue_calls.total], ...calls], 'Queue calls')),
  ];
}

async function showDeadLetters(path, into) {
  const { batches } = await api.call('GET', `${path}/failed`);
  const rows = batches.map((batch) => h('tr', {},
    h('td', {}, batch.batch_id), h('td', { class: 'items' }, JSON.stringify(batch.items)),
    h('td', {}, batch.attempts), h('td', { class: 'error' }, batch.error)));
  into.replaceChildren(table('Dead-lettered batches: items and last error', ['Batch', 'Items', 'Attempts', 'Last error'], rows));
}

// The workers' and dequeuers' lines, new ones as they come until the job ends; scrolled along unless read above.
function followLogs(page, path, pre) {
  api.readLines(`${path}/logs?follow=true`, page.signal, (line) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(`${line}\n`);
    while (pre.childNodes.length > LOG_LINES) pre.firstChild.remove();
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }).catch((error) => {
    if (error.name !== 'AbortError') pre.append(`(the logs could not be read: ${error.message})\n`);
  });
}
