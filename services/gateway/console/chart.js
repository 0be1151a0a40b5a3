// Throughput over time: the job's rate (batches/s over the last minute) at each change the event stream brings.
import { svg } from './dom.js';
import { rate } from './format.js';

const WIDTH = 600;
const HEIGHT = 120;

export function throughputChart() {
  const samples = [];
  const line = svg('polyline', { class: 'rate', points: '' });
  const peak = svg('text', { x: 4, y: 14 }, '');
  const figure = svg('svg', { id: 'throughput', viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img',
    'aria-label': 'Throughput over time: no batches yet' },
  svg('line', { class: 'axis', x1: 0, y1: HEIGHT - 1, x2: WIDTH, y2: HEIGHT - 1 }), line, peak);

  function add(perSecond) {
    samples.push({ at: Date.now(), perSecond });
    const start = samples[0].at;
    const span = Math.max(samples.at(-1).at - start, 1);
    const top = Math.max(...samples.map((s) => s.perSecond), 0.001);
    const points = samples.map((s) => `${((s.at - start) / span) * WIDTH},${HEIGHT - 2 - (s.perSecond / top) * (HEIGHT - 20)}`);
    line.setAttribute('points', points.join(' '));
    peak.textContent = `peak ${rate(top)}`;
    figure.setAttribute('aria-label', `Throughput over time: now ${rate(perSecond)}, peak ${rate(top)}`);
  }
  return { figure, add };
}
