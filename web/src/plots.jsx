// Time plots (uPlot, bundled: no CDN) and the workers' state timelines.
//
// A null value is a slot without data: uPlot leaves a gap there (spanGaps
// off), so a silent device shows as a break in every line.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import {useEffect, useRef} from 'preact/hooks';

const HEIGHT = 150;

function clockText(seconds, withDate) {
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return withDate ? `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}` : time;
}

export {clockText};

// One metric over time: {id, title, unit, times (s), values, from, to, color, bars}.
export function Plot({id, title, unit, times, values, from, to, color, bars}) {
  const box = useRef(null);
  const chart = useRef(null);
  const points = values.filter((v) => v !== null && v !== undefined).length;
  useEffect(() => {
    const el = box.current;
    const width = () => Math.max(220, el.clientWidth);
    const opts = {
      width: width(),
      height: HEIGHT,
      scales: {x: {time: true, range: () => [from, to]}},
      series: [
        {value: (u, v) => (v === null ? '–' : clockText(v, to - from > 86400))},
        {
          label: title, stroke: color, width: 1.5, spanGaps: false,
          fill: bars ? color : undefined,
          paths: bars ? uPlot.paths.bars({size: [0.9, 12]}) : undefined,
          points: {show: !bars, size: 3, fill: color},
          value: (u, v) => (v === null || v === undefined ? '–' : `${v}${unit}`),
        },
      ],
      axes: [{}, {size: 64}],   // the unit is in the caption: wide numbers fit
      legend: {live: true},
    };
    chart.current = new uPlot(opts, [times, values], el);
    const resize = new ResizeObserver(() => chart.current.setSize({width: width(), height: HEIGHT}));
    resize.observe(el);
    return () => {
      resize.disconnect();
      chart.current.destroy();
      chart.current = null;
    };
  }, [from, to, title]);
  useEffect(() => {
    if (chart.current) {
      chart.current.setData([times, values]);
    }
  }, [times, values]);
  return (
    <figure class="plot" data-plot={id} data-points={points}>
      <figcaption>{title}{unit.trim() ? ` (${unit.trim()})` : ''}
        <span class="sub">{points ? `${points} sample${points === 1 ? '' : 's'}` : 'no data in this range'}</span>
      </figcaption>
      <div ref={box} class="plot-box" />
    </figure>
  );
}

const STATE_NAMES = {R: 'running', s: 'starting', t: 'stopping', S: 'stopped', E: 'exited',
  B: 'backoff', F: 'fatal'};

// Runs of equal state letters: [{from, to, code}] (times in s), "." (no data) left out.
export function stateRuns(times, states, step) {
  const runs = [];
  for (let i = 0; i < times.length; i++) {
    const code = states[i] || '.';
    const last = runs[runs.length - 1];
    if (last && last.code === code && last.to === times[i]) {
      last.to = times[i] + step;
    } else if (code !== '.') {
      runs.push({from: times[i], to: times[i] + step, code});
    }
  }
  return runs;
}

// A worker's states as coloured bands over the range: a gap is left empty.
export function Timeline({worker, times, step, from, to}) {
  const runs = stateRuns(times, worker.states, step);
  const span = Math.max(1, to - from);
  const x = (t) => ((Math.max(from, Math.min(to, t)) - from) / span) * 1000;
  const seen = [...new Set(runs.map((r) => r.code))];
  return (
    <div class="timeline" data-timeline={worker.id}>
      <div class="timeline-name">{worker.name || worker.id}
        <span class="sub">{seen.map((c) => STATE_NAMES[c] || c).join(', ') || 'no data in this range'}</span>
      </div>
      <svg viewBox="0 0 1000 10" preserveAspectRatio="none" role="img"
        aria-label={`States of ${worker.name || worker.id}: ` +
          (runs.map((r) => `${STATE_NAMES[r.code] || r.code} ${clockText(r.from, span > 86400)}–${clockText(r.to, span > 86400)}`).join('; ') || 'no data')}>
        <rect x="0" y="0" width="1000" height="10" class="timeline-empty" />
        {runs.map((r, i) => (
          <rect key={i} x={x(r.from)} y="0" width={Math.max(0.5, x(r.to) - x(r.from))} height="10"
            class={'state-band state-' + (STATE_NAMES[r.code] || 'unknown')} data-state={STATE_NAMES[r.code]}>
            <title>{STATE_NAMES[r.code] || r.code}: {clockText(r.from, true)} – {clockText(r.to, true)}</title>
          </rect>
        ))}
      </svg>
    </div>
  );
}
