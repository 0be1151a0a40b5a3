// Jobs, newest first, filtered by API and status. There is no event stream of the list as a whole, so the list is
// read again every few seconds while the tab is visible; a job's own page follows that job's event stream.
import * as api from './api.js';
import { h, table } from './dom.js';
import { age, progress, rate, STATUSES, statusWords } from './format.js';

const REFRESH_MS = 2000;
const LIMIT = 200;

export async function jobsPage(page) {
  const apiFilter = h('input', { id: 'filter-api', list: 'api-names', placeholder: 'all APIs', autocomplete: 'off' });
  const statusFilter = h('select', { id: 'filter-status' },
    h('option', { value: '' }, 'all statuses'),
    h('option', { value: 'in_progress' }, 'in progress'),
    STATUSES.map((status) => h('option', { value: status }, statusWords(status))));
  const apiNames = h('datalist', { id: 'api-names' });
  const problem = h('p', { class: 'problem', role: 'alert' });
  const list = h('div', { id: 'jobs' });
  const filters = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter jobs' },
    h('label', { for: 'filter-api' }, 'API'), apiFilter, apiNames,
    h('label', { for: 'filter-status' }, 'Status'), statusFilter);
  filters.addEventListener('submit', (event) => { event.preventDefault(); refresh(); }); // Enter in the API field
  page.main.append(h('h1', {}, 'Jobs'), filters, problem, list);
  if (api.may('read')) {
    api.call('GET', '/v1/apis').then(({ apis }) => apiNames.append(...apis.map((a) => h('option', { value: a.name }))));
  }

  async function refresh() {
    const query = new URLSearchParams({ limit: LIMIT });
    if (apiFilter.value.trim()) query.set('api', apiFilter.value.trim());
    try {
      const { jobs } = await api.call('GET', `/v1/jobs?${query}`);
      const shown = jobs.map((job) => job.job_status).filter((status) => matches(status, statusFilter.value));
      const focused = document.activeElement?.closest('tr')?.dataset.jobId;
      list.replaceChildren(shown.length ? jobsTable(shown) : h('p', {}, 'No jobs match.'));
      if (focused) list.querySelector(`tr[data-job-id="${CSS.escape(focused)}"] a`)?.focus(); // keyboard users keep their place
      problem.textContent = '';
    } catch (error) {
      if (error.status === 401) page.fail(error);
      else problem.textContent = `Could not list the jobs: ${error.message}`;
    }
  }
  apiFilter.addEventListener('change', refresh);
  statusFilter.addEventListener('change', refresh);
  page.every(REFRESH_MS, refresh);
}

function matches(status, wanted) {
  if (!wanted) return true;
  if (wanted === 'in_progress') return ['pending', 'enqueuing', 'running'].includes(status.status);
  return status.status === wanted;
}

function jobsTable(statuses) {
  const headings = ['Job', 'API', 'Status', 'Progress', 'Rate', 'Age', 'Owner'];
  return table('Jobs, newest first', headings, statuses.map(jobRow));
}

function jobRow(status) {
  const { done, total } = progress(status);
  const bar = h('progress', { max: total ?? undefined, value: total === null ? undefined : done,
    'aria-label': `Progress of job ${status.job_id}` });
  return h('tr', { 'data-job-id': status.job_id, 'data-status': status.status },
    h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(status.job_id)}` }, status.job_id)),
    h('td', {}, status.api_name),
    h('td', { class: 'status' }, statusWords(status.status)),
    h('td', {}, bar, ` ${done} / ${total ?? '?'}`),
    h('td', {}, rate(status.pace.batches_per_s)),
    h('td', {}, age(status.start_time)),
    h('td', {}, status.owner ?? '–'));
}
