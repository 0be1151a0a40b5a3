// The deployed Batch APIs (a `read` key) and their specs.
import * as api from './api.js';
import { facts, h } from './dom.js';
import { clock } from './format.js';

export async function apisPage(page) {
  const { apis } = await api.call('GET', '/v1/apis');
  page.main.append(h('h1', {}, 'APIs'), ...(apis.length ? apis.map(apiCard) : [h('p', {}, 'No API is deployed.')]));
}

function apiCard(spec) {
  const container = spec.pod.containers[0];
  const command = container ? [...container.command, ...container.args].join(' ') : '–';
  return h('section', { class: 'card', 'aria-labelledby': `api-${spec.name}` },
    h('h2', { id: `api-${spec.name}` }, spec.name),
    facts([['Endpoint', spec.endpoint], ['Command', command], ['Image', container?.image || '–'],
      ['Updated', clock(spec.updated_time)]], `API ${spec.name}`),
    h('details', {}, h('summary', {}, 'Spec'), h('pre', {}, JSON.stringify(spec, null, 2))),
    api.may('submit') ? h('a', { href: `#/submit/${encodeURIComponent(spec.name)}` }, `Submit a job to ${spec.name}`) : null);
}
