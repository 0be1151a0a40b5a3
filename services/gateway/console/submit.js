// Submitting a job from a JSON editor: the dry run first (POST /batch/<api>?dryRun=true); Submit is offered only
// once the dry run passed for exactly the text and API in the form.
import * as api from './api.js';
import { h } from './dom.js';

const EXAMPLE = { workers: 1, item_list: { items: [1, 2, 3], batch_size: 1 }, config: {} };

export async function submitPage(page, apiName) {
  const names = api.may('read') ? (await api.call('GET', '/v1/apis')).apis.map((spec) => spec.name) : null;
  // A key that cannot read the APIs (submit alone) types the name.
  const apiField = names
    ? h('select', { id: 'submit-api' }, names.map((name) => h('option', { value: name, selected: name === apiName }, name)))
    : h('input', { id: 'submit-api', value: apiName ?? '', required: true, autocomplete: 'off' });
  const editor = h('textarea', { id: 'submission', rows: 14, spellcheck: 'false', 'aria-describedby': 'submission-help' },
    JSON.stringify(EXAMPLE, null, 2));
  const dryRun = h('button', { type: 'button', id: 'dry-run' }, 'Check (dry run)');
  const submit = h('button', { type: 'submit', id: 'submit', disabled: true }, 'Submit');
  const outcome = h('pre', { id: 'outcome', role: 'status' });
  let checked = null; // the API and text that passed the dry run

  const current = () => ({ api: apiField.value.trim(), text: editor.value });
  const request = (dry) => api.call('POST', `/batch/${encodeURIComponent(current().api)}${dry ? '?dryRun=true' : ''}`,
    editor.value);
  function parsed() {
    try {
      JSON.parse(editor.value);
      return true;
    } catch (error) {
      outcome.textContent = `The job is not valid JSON: ${error.message}`;
      return false;
    }
  }

  for (const field of [apiField, editor]) {
    field.addEventListener('input', () => { submit.disabled = true; checked = null; });
  }
  dryRun.addEventListener('click', async () => {
    submit.disabled = true;
    if (!parsed()) return;
    const attempt = current();
    try {
      outcome.textContent = await request(true);
      checked = attempt;
      submit.disabled = false;
    } catch (error) {
      outcome.textContent = `The dry run failed (${error.kind}): ${error.message}`;
    }
  });
  const form = h('form', { id: 'submit-form', 'aria-labelledby': 'submit-title' },
    h('h1', { id: 'submit-title' }, 'Submit a job'),
    h('label', { for: 'submit-api' }, 'API'), apiField,
    h('label', { for: 'submission' }, 'Job (JSON)'), editor,
    h('p', { id: 'submission-help', class: 'help' },
      'Cortex\'s submission: workers, item_list or file_path_lister or delimited_files, config, timeout. Check it with a dry run, then submit.'),
    h('div', { class: 'actions' }, dryRun, submit), outcome);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const attempt = current();
    if (!checked || checked.api !== attempt.api || checked.text !== attempt.text) return;
    try {
      const job = await request(false);
      location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
    } catch (error) {
      outcome.textContent = `The submission failed (${error.kind}): ${error.message}`;
    }
  });
  page.main.append(form);
}
