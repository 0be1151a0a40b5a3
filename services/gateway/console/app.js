// The console's frame: the key form, the sections its scopes allow, and a page per address (#/jobs, #/jobs/<id>,
// #/apis, #/submit). Leaving a page aborts its streams and timers.
import * as api from './api.js';
import { h } from './dom.js';
import { apisPage } from './apis.js';
import { jobPage } from './job.js';
import { jobsPage } from './jobs.js';
import { submitPage } from './submit.js';

const main = document.getElementById('main');
let leavePage = () => {};

function signIn(refusal) {
  showFrame(false);
  const key = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const problem = h('p', { id: 'sign-in-problem', class: 'problem', role: 'alert' }, refusal ?? '');
  const form = h('form', { id: 'sign-in', 'aria-labelledby': 'sign-in-title' },
    h('h1', { id: 'sign-in-title' }, 'Sign in'),
    h('p', {}, 'The console acts with an API key and shows what its scopes allow. It is kept in this tab only.'),
    h('label', { for: 'api-key' }, 'API key'), key,
    h('button', { type: 'submit' }, 'Sign in'),
    problem);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    api.session.key = key.value.trim();
    try {
      await api.identify();
    } catch (error) {
      api.session.forget();
      problem.textContent = `This key was refused: ${error.message}`;
      key.focus();
      return;
    }
    route();
  });
  main.replaceChildren(form);
  key.focus();
}

function showFrame(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('sign-out').hidden = !signedIn;
  for (const link of document.querySelectorAll('#nav [data-scope]')) link.hidden = !api.may(link.dataset.scope);
  const scopes = api.caller.scopes.join(', ');
  document.getElementById('who').textContent = signedIn ? `${api.caller.name || 'open API'} (${scopes})` : '';
}

async function route() {
  leavePage();
  if (!api.session.key) return signIn();
  if (api.caller.name === null) {
    try {
      await api.identify();
    } catch (error) {
      api.session.forget();
      return signIn(`This key was refused: ${error.message}`);
    }
  }
  showFrame(true);
  const controller = new AbortController();
  const timers = [];
  leavePage = () => { controller.abort(); timers.forEach(clearInterval); };
  const page = {
    main,
    signal: controller.signal,
    // What the page cannot show; a key refused meanwhile (revoked) goes back to the key form.
    fail(error) {
      if (error.name === 'AbortError') return;
      if (error.status === 401) signOut(`This key was refused: ${error.message}`);
      else main.replaceChildren(h('p', { class: 'problem', role: 'alert' }, error.message));
    },
    // `task` now and every `ms` while the tab is visible, never two at once.
    every(ms, task) {
      let running = false;
      const run = () => {
        if (running || document.hidden) return;
        running = true;
        Promise.resolve(task()).finally(() => { running = false; });
      };
      run();
      timers.push(setInterval(run, ms));
    },
  };
  const [, section, name] = location.hash.split('/').map(decodeURIComponent);
  main.replaceChildren();
  main.focus(); // a new page: screen readers and keyboard users start at its top
  try {
    if (section === 'jobs' && name) await jobPage(page, name);
    else if (section === 'apis' && api.may('read')) await apisPage(page);
    else if (section === 'submit' && api.may('submit')) await submitPage(page, name);
    else await jobsPage(page);
  } catch (error) {
    page.fail(error);
  }
}

function signOut(reason) {
  leavePage();
  api.session.forget();
  signIn(reason);
}

document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
route();
