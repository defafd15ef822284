// The search page: filters in the address, a timeline, a table loaded page by page, an
// event's detail, exports of the whole result. No framework, nothing from another origin.
//
// Safe by construction: every value that comes from the archive (or from the address) reaches
// the page through textContent, createTextNode or setAttribute on a non-executable attribute,
// never through innerHTML; links are "#" plus URLSearchParams-encoded text. The
// Content-Security-Policy the server sends forbids inline script and style besides.
(() => {
  'use strict';

  const FILTERS = ['subscription', 'resource_group', 'resource', 'resource_type', 'operation',
    'caller', 'category', 'status', 'level', 'correlation_id', 'text'];
  // Identity filters: without `since` the API searches the whole index for these.
  const KEYS = ['correlation_id', 'resource', 'resource_group', 'caller', 'operation',
    'subscription'];
  const PRESETS = ['1h', '24h', '7d', '30d', '90d', '365d', 'all'];
  const DEFAULT_RANGE = '7d';
  // "All retained" without an identity filter: the API's default would be 30 days, so the
  // page asks for ten years (the timeline then starts at the first bucket that holds events).
  const ALL_UNKEYED = '3650d';
  const PAGE_SIZE = 100;
  const MAX_VALUE = 1024; // the API's longest filter value (shared/core/query_spec.py MAX_TEXT)
  const EXPORT_PAGE = 1000;
  const AUTO_PAGES = 3; // pages loaded in a row while the end of the table stays in view
  const COLUMNS = [
    ['TimeGenerated', 'time'], ['OperationNameValue', 'op'], ['ActivityStatusValue', ''],
    ['CategoryValue', ''], ['Level', ''], ['Caller', ''], ['ResourceGroup', ''],
    ['ResourceId', 'resource'], ['SubscriptionId', ''],
  ];
  const SUMMARY = ['TimeGenerated', 'OperationNameValue', 'OperationName', 'ActivityStatusValue',
    'ActivitySubstatusValue', 'CategoryValue', 'Level', 'Caller', 'CallerIpAddress', 'ResourceId',
    'ResourceGroup', 'ResourceProviderValue', 'SubscriptionId', 'CorrelationId', 'OperationId',
    'EventDataId', 'Location', 'Description', 'DurationMs', 'AadTenantId', 'Hierarchy', 'EventKey'];
  const SECTIONS = [['Properties', 'Properties_d'], ['Claims', 'Claims_d'],
    ['HTTP request', 'HttpRequest'], ['Authorization', 'Authorization_d'],
    ['Additional fields', 'AdditionalFields'], ['Normalization warnings', 'NormalizationWarnings']];
  const MAX_DEPTH = 12;

  const $ = (id) => document.getElementById(id);
  const form = $('filters');
  const tbody = document.querySelector('#results tbody');
  const table = $('results');
  // The API sits beside the page: .../search/activity, .../search/histogram.
  const BASE = new URL('..', document.currentScript.src).pathname.replace(/\/$/, '');

  const view = {
    state: null, generation: 0, abort: null, records: [], continuation: null, loading: false,
    scanned: null, autoPages: 0, selected: null, exportAbort: null,
  };

  // --- small helpers -------------------------------------------------------------------------

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function svg(tag, attributes) {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function say(text) {
    const box = $('message');
    box.textContent = text || '';
    box.hidden = !text;
  }

  // What the API trims from a filter value (Python's str.strip): not JavaScript's trim, which
  // also takes a leading U+FEFF that an archived value may hold (its links must find it).
  const SPACE = '[\\t\\n\\v\\f\\r \\x1c-\\x1f\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';
  const EDGES = new RegExp(`^${SPACE}+|${SPACE}+$`, 'g');
  const trimmed = (text) => String(text).replace(EDGES, '');
  const pad = (n, width) => String(n).padStart(width || 2, '0');

  // "2025-03-01T12:00:05.1234567Z" -> Date (to the millisecond); null if not a time.
  function parseTime(text) {
    const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$/.exec(String(text || ''));
    if (!m) return null;
    const date = new Date(m[1] + (m[2] ? m[2].slice(0, 4) : '') + (m[3] || 'Z'));
    return Number.isNaN(date.getTime()) ? null : date;
  }

  function zoneName(date, tz) {
    if (tz === 'utc') return 'UTC';
    const offset = -date.getTimezoneOffset();
    const sign = offset < 0 ? '-' : '+';
    return `UTC${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
  }

  function showTime(value, tz, withZone) {
    const date = value instanceof Date ? value : parseTime(value);
    if (!date) return value === null || value === undefined ? '' : String(value);
    const utc = tz === 'utc';
    const part = (name) => date[(utc ? 'getUTC' : 'get') + name]();
    const text = `${part('FullYear')}-${pad(part('Month') + 1)}-${pad(part('Date'))} ` +
      `${pad(part('Hours'))}:${pad(part('Minutes'))}:${pad(part('Seconds'))}`;
    return withZone ? `${text} ${zoneName(date, tz)}` : text;
  }

  // A <input type=datetime-local> value read in the chosen zone, as an ISO time in UTC.
  function inputToIso(value, tz) {
    if (!value) return '';
    const full = value.length === 16 ? `${value}:00` : value;
    const date = new Date(tz === 'utc' ? `${full}Z` : full);
    return Number.isNaN(date.getTime()) ? '' : date.toISOString().replace('.000Z', 'Z');
  }

  function isoToInput(iso, tz) {
    const date = parseTime(iso);
    return date ? showTime(date, tz).replace(' ', 'T') : '';
  }

  // --- the state: what the address holds ----------------------------------------------------

  function readAddress() {
    const params = new URLSearchParams(location.hash.slice(1));
    const state = { filters: {}, since: params.get('since') || DEFAULT_RANGE, until: params.get('until') || '',
      tz: params.get('tz') === 'local' ? 'local' : 'utc', split: params.get('split') === 'category' ? 'category' : 'status' };
    for (const name of FILTERS) {
      const value = trimmed(params.get(name) || '');
      if (value) state.filters[name] = value;
    }
    return state;
  }

  function address(state) {
    const params = new URLSearchParams();
    for (const name of FILTERS) if (state.filters[name]) params.set(name, state.filters[name]);
    params.set('since', state.since);
    if (state.until) params.set('until', state.until);
    if (state.tz !== 'utc') params.set('tz', state.tz);
    if (state.split !== 'status') params.set('split', state.split);
    return `#${params.toString()}`;
  }

  const keyed = (state) => KEYS.some((name) => state.filters[name]);

  // The query's parameters for the API (the page's own settings, tz and split, stay out).
  function apiParams(state) {
    const params = new URLSearchParams();
    for (const name of FILTERS) if (state.filters[name]) params.set(name, state.filters[name]);
    if (state.since === 'all') {
      if (!keyed(state)) params.set('since', ALL_UNKEYED);
    } else {
      params.set('since', state.since);
      if (state.until) params.set('until', state.until);
    }
    return params;
  }

  function readForm() {
    const data = new FormData(form);
    const tz = data.get('tz') === 'local' ? 'local' : 'utc';
    const state = { filters: {}, since: String(data.get('range') || DEFAULT_RANGE), until: '', tz,
      split: $('split').value === 'category' ? 'category' : 'status' };
    for (const name of FILTERS) {
      const value = trimmed(data.get(name) || '');
      if (value) state.filters[name] = value;
    }
    if (state.since === 'custom') {
      state.since = fieldIso('from', tz) || '24h';
      state.until = fieldIso('to', tz);
    }
    return state;
  }

  // A time field's ISO time: the one it was filled with while it still shows that (a local
  // time on a night clocks go back names two instants; the field cannot say which).
  function fieldIso(name, tz) {
    const field = form.elements.namedItem(name);
    if (field.dataset.iso && field.value === field.dataset.shown && tz === field.dataset.tz) {
      return field.dataset.iso;
    }
    return inputToIso(field.value, tz);
  }

  function ensureOption(select, value) {
    if (!value || [...select.options].some((option) => option.value === value)) return;
    select.appendChild(el('option', value));
  }

  function fillForm(state) {
    for (const name of FILTERS) {
      const field = form.elements.namedItem(name);
      if (field.tagName === 'SELECT') ensureOption(field, state.filters[name]);
      field.value = state.filters[name] || '';
    }
    const preset = PRESETS.includes(state.since) && !state.until;
    form.elements.namedItem('range').value = preset ? state.since : 'custom';
    form.elements.namedItem('tz').value = state.tz;
    $('split').value = state.split;
    $('custom-range').hidden = preset;
    if (!preset) {
      for (const [name, iso] of [['from', state.since], ['to', state.until]]) {
        const field = form.elements.namedItem(name);
        field.value = isoToInput(iso, state.tz);
        Object.assign(field.dataset, { iso, shown: field.value, tz: state.tz });
      }
    }
  }

  // --- requests ------------------------------------------------------------------------------

  async function getJson(path, params, signal) {
    const response = await fetch(`${BASE}/${path}?${params}`, { signal, credentials: 'same-origin',
      headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await response.json(); } catch (error) { body = null; }
    if (!response.ok) throw new Error(failure(response.status, body));
    return body;
  }

  function failure(status, body) {
    if (status === 401) return 'Your sign-in has expired: reload the page to sign in again.';
    if (status === 403) return 'Your account may not use this page (ask for the reader role).';
    const said = body && typeof body.error === 'string' ? body.error : '';
    return said ? `The search was refused: ${said}` : `The search failed (HTTP ${status}).`;
  }

  // --- searching ------------------------------------------------------------------------------

  function run(state) {
    if (view.abort) view.abort.abort();
    view.abort = new AbortController();
    view.generation += 1;
    table.dataset.search = String(view.generation); // which search the table shows (tests wait on it)
    Object.assign(view, { state, records: [], continuation: null, scanned: null, autoPages: 0, loading: false });
    say('');
    clear(tbody);
    closeDetail();
    $('time-head').textContent = `Time (${state.tz === 'utc' ? 'UTC' : 'local time'})`;
    $('count').textContent = 'Searching…';
    $('more').hidden = true;
    // The table first, then the timeline: on one worker (or `serve`, one process) the two
    // requests side by side would share its time, and the rows are what the user waits for.
    const generation = view.generation;
    const signal = view.abort.signal;
    for (const id of ['timeline', 'axis', 'legend']) clear($(id));
    $('timeline-note').textContent = 'Counting…';
    loadPage(generation).then(() => {
      if (generation === view.generation) loadTimeline(state, generation, signal);
    });
  }

  async function loadPage(generation) {
    if (view.loading && generation === view.generation) return;
    const params = apiParams(view.state);
    params.set('limit', String(PAGE_SIZE));
    if (view.continuation) params.set('continuation', view.continuation);
    view.loading = true;
    table.dataset.state = 'loading';
    $('more').disabled = true;
    try {
      const body = await getJson('activity', params, view.abort.signal);
      if (generation !== view.generation) return;
      const records = Array.isArray(body.records) ? body.records : [];
      const stuck = !records.length && body.continuation && body.continuation === view.continuation;
      view.continuation = stuck ? null : body.continuation || null;  // as the export: never looped on
      if (stuck) say('The search did not move on (a defect: please report it).');
      view.scanned = body.scanned || null;
      for (const record of records) tbody.appendChild(row(record, view.records.push(record) - 1));
      if (Array.isArray(body.unreadable) && body.unreadable.length) {
        say(`${body.unreadable.length} archive blob(s) could not be read; their events are missing here: ${body.unreadable.slice(0, 3).join(', ')}`);
      }
      table.dataset.state = 'ready';
    } catch (error) {
      if (generation !== view.generation || error.name === 'AbortError') return;
      table.dataset.state = 'error';
      say(error.message);
    } finally {
      if (generation === view.generation) {
        view.loading = false;
        showCount();
        afterPage(generation);
      }
    }
  }

  function showCount() {
    const shown = view.records.length;
    let text = `${shown.toLocaleString('en-US')} record${shown === 1 ? '' : 's'} shown`;
    if (view.continuation) text += ', more available';
    if (view.scanned && view.scanned.until) {
      text += ` (searched back to ${showTime(view.scanned.until, view.state.tz, true)} so far)`;
    }
    if (!shown && !view.continuation) {
      text = table.dataset.state === 'error' ? '' : 'No events match in this range.';
    }
    $('count').textContent = text;
    $('more').hidden = !view.continuation;
    $('more').disabled = false;
  }

  // While the end of the table stays in view, a few more pages come by themselves.
  function afterPage(generation) {
    // Measured now: the observer has not yet seen the rows just added.
    const inView = $('sentinel').getBoundingClientRect().top < window.innerHeight;
    if (view.continuation && inView && view.autoPages < AUTO_PAGES) {
      view.autoPages += 1;
      loadPage(generation);
    }
  }

  function row(record, index) {
    const tr = el('tr');
    tr.tabIndex = 0;
    tr.dataset.index = String(index);
    tr.dataset.key = String(record.EventKey || '');
    for (const [column, kind] of COLUMNS) {
      const value = record[column];
      const text = kind === 'time' ? showTime(value, view.state.tz) : (value === null || value === undefined ? '' : String(value));
      const td = el('td', null, kind);
      // A resource id is cut at its start (the cell is right-to-left); its own text stays
      // left-to-right, so its leading "/" stays in front.
      td.appendChild(kind === 'resource' ? el('span', text, 'ltr') : document.createTextNode(text));
      if (kind === 'resource' || kind === 'op') td.setAttribute('title', kind === 'op' ? String(record.OperationName || text) : text);
      tr.appendChild(td);
    }
    return tr;
  }

  function openRow(tr) {
    const record = view.records[Number(tr.dataset.index)];
    if (!record) return;
    for (const other of tbody.querySelectorAll('tr.selected')) other.classList.remove('selected');
    tr.classList.add('selected');
    showDetail(record);
  }

  // --- the detail pane ------------------------------------------------------------------------

  function link(text, state, className) {
    const a = el('a', text, className);
    a.setAttribute('href', address(state));
    return a;
  }

  function relatedState(filters, since, until) {
    return { filters, since, until: until || '', tz: view.state.tz, split: view.state.split };
  }

  function dayOf(record) {
    const date = parseTime(record.TimeGenerated);
    if (!date) return null;
    const start = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
    const end = new Date(start.getTime() + 86400000);
    return [start.toISOString().replace('.000Z', 'Z'), end.toISOString().replace('.000Z', 'Z')];
  }

  function showDetail(record) {
    view.selected = record;
    $('detail').hidden = false;
    $('layout').classList.add('with-detail');
    $('detail-title').textContent = String(record.OperationNameValue || record.OperationName || 'Event');
    $('copy-status').textContent = '';
    const links = $('detail-links');
    clear(links);
    const related = (value, what, make) => {
      if (!value) return;
      if (trimmed(value).length <= MAX_VALUE) links.appendChild(make(String(value)));
      else links.appendChild(el('span', `Its ${what} is longer than the 1,024 characters a search takes.`, 'link-note'));
    };
    related(record.CorrelationId, 'correlation id', (value) => link('Other events of this correlation id',
      relatedState({ correlation_id: value }, 'all'), 'link-correlation'));
    related(record.ResourceId, 'resource id', (value) => link('Resource history (created, changed, deleted)',
      relatedState({ resource: value }, 'all'), 'link-resource'));
    const day = dayOf(record);
    if (day) {
      related(record.Caller, 'caller', (value) => link('Everything this caller did that day (UTC)',
        relatedState({ caller: value }, day[0], day[1]), 'link-caller-day'));
    }
    const body = $('detail-body');
    clear(body);
    body.appendChild(summary(record));
    for (const [title, column] of SECTIONS) {
      const value = record[column];
      if (value === null || value === undefined || value === '' || isEmpty(value)) continue;
      const section = el('section', null, 'part');
      section.appendChild(el('h3', title));
      section.appendChild(render(expand(value), 0));
      body.appendChild(section);
    }
    const raw = el('details', null, 'raw');
    raw.appendChild(el('summary', 'The whole record as JSON'));
    raw.appendChild(el('pre', JSON.stringify(record, null, 2)));
    body.appendChild(raw);
  }

  function summary(record) {
    const dl = el('dl', null, 'summary');
    for (const column of SUMMARY) {
      const value = record[column];
      if (value === null || value === undefined || value === '') continue;
      dl.appendChild(el('dt', column));
      const text = column === 'TimeGenerated'
        ? `${showTime(value, view.state.tz, true)} (${value})` : String(value);
      dl.appendChild(el('dd', text));
    }
    return dl;
  }

  const isEmpty = (value) => typeof value === 'object' && value !== null && Object.keys(value).length === 0;

  // A property that holds JSON text (a response body, say) is shown as the value it holds.
  function expand(value) {
    if (typeof value !== 'string' || !/^\s*[[{]/.test(value)) return value;
    try { return JSON.parse(value); } catch (error) { return value; }
  }

  function render(value, depth) {
    if (value === null || typeof value !== 'object' || depth >= MAX_DEPTH) {
      const text = typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value);
      return el('span', text, value === null ? 'value null' : 'value');
    }
    if (Array.isArray(value)) {
      const list = el('ol', null, 'list');
      for (const item of value) {
        const li = el('li');
        li.appendChild(render(expand(item), depth + 1));
        list.appendChild(li);
      }
      return list;
    }
    const dl = el('dl', null, 'tree');
    for (const [name, item] of Object.entries(value)) {
      dl.appendChild(el('dt', name));
      const dd = el('dd');
      dd.appendChild(render(expand(item), depth + 1));
      dl.appendChild(dd);
    }
    return dl;
  }

  function closeDetail() {
    view.selected = null;
    $('detail').hidden = true;
    $('layout').classList.remove('with-detail');
    for (const other of tbody.querySelectorAll('tr.selected')) other.classList.remove('selected');
  }

  async function copyJson() {
    if (!view.selected) return;
    const text = JSON.stringify(view.selected, null, 2);
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      // Without the clipboard API (an http page not on this machine): select and copy.
      const area = el('textarea', text);
      area.setAttribute('readonly', '');
      document.body.appendChild(area);
      area.select();
      document.execCommand('copy');
      area.remove();
    }
    $('copy-status').textContent = 'Copied';
  }

  // --- the timeline ---------------------------------------------------------------------------

  const BUCKET_MS = { hour: 3600000, day: 86400000 };
  const MIN_SLOTS = 12;

  async function loadTimeline(state, generation, signal) {
    const params = apiParams(state);
    params.set('split', state.split);
    try {
      const body = await getJson('histogram', params, signal);
      if (generation === view.generation) drawTimeline(body, state);
    } catch (error) {
      if (generation === view.generation && error.name !== 'AbortError') {
        $('timeline-note').textContent = `No timeline: ${error.message}`;
      }
    }
  }

  function drawTimeline(body, state) {
    let buckets = Array.isArray(body.buckets) ? body.buckets : [];
    const size = BUCKET_MS[body.bucket] || BUCKET_MS.day;
    if (state.since === 'all') {
      const first = buckets.findIndex((bucket) => Object.keys(bucket.counts || {}).length);
      buckets = first < 0 ? [] : buckets.slice(first);
    }
    const labels = [...new Set(buckets.flatMap((bucket) => Object.keys(bucket.counts || {})))].sort();
    const totals = buckets.map((bucket) => Object.values(bucket.counts || {}).reduce((a, b) => a + b, 0));
    const most = Math.max(1, ...totals);
    const width = Math.max(1, buckets.length) * 10;
    const chart = svg('svg', { viewBox: `0 0 ${width} 100`, preserveAspectRatio: 'none',
      role: 'group', 'aria-label': 'Events per bucket; select a bar to narrow the range' });
    buckets.forEach((bucket, index) => chart.appendChild(bar(bucket, index, totals[index] / most, labels, size, state)));
    $('timeline').appendChild(chart);
    const axis = $('axis');
    // A few buckets stay bar-wide: the chart takes a share of the width (set through the
    // CSSOM, which the policy allows; an inline style attribute it would not), and the axis
    // then says the range in one line instead of marking its ends.
    const few = buckets.length < MIN_SLOTS;
    chart.style.width = few ? `${(100 * Math.max(1, buckets.length)) / MIN_SLOTS}%` : '100%';
    if (buckets.length) {
      const from = showTime(buckets[0].start, state.tz, true);
      const to = showTime(new Date(parseTime(buckets[buckets.length - 1].start).getTime() + size), state.tz, true);
      const kind = `${body.bucket === 'hour' ? 'hourly' : 'daily'} bars`;
      const marks = few ? [`${from} to ${to}, ${kind}`] : [from, kind, to];
      for (const mark of marks) axis.appendChild(el('span', mark));
    }
    for (const label of labels) {
      const item = el('span', null, 'key');
      item.appendChild(el('i', null, `swatch ${paint(label)}`));
      item.appendChild(document.createTextNode(label));
      $('legend').appendChild(item);
    }
    const total = Number(body.total) || 0;
    let note = `${total.toLocaleString('en-US')} events in the range`;
    if (body.exact === false) note += ' (approximate: blobs across buckets are shared out)';
    if (Array.isArray(body.not_applied) && body.not_applied.length) note += `; counted without: ${body.not_applied.join(', ')}`;
    if (Array.isArray(body.unindexed) && body.unindexed.length) note += `; months not counted: ${body.unindexed.join(', ')}`;
    $('timeline-note').textContent = note;
  }

  // A CSS class from a label: letters only, so a label is never more than a name.
  const paint = (label) => `c-${String(label).toLowerCase().replace(/[^a-z]/g, '') || 'other'}`;

  function bar(bucket, index, share, labels, size, state) {
    const group = svg('g', { class: 'bucket', tabindex: '0', role: 'button' });
    const start = parseTime(bucket.start);
    const end = start ? new Date(start.getTime() + size) : null;
    const counts = bucket.counts || {};
    const parts = labels.filter((label) => counts[label]).map((label) => `${label} ${counts[label]}`);
    const title = svg('title');
    title.textContent = `${showTime(start, state.tz, true)}: ${parts.join(', ') || 'no events'}`;
    group.appendChild(title);
    group.appendChild(svg('rect', { x: index * 10, y: 0, width: 10, height: 100, class: 'hit' }));
    const whole = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
    let top = 100;
    for (const label of labels) {
      if (!counts[label]) continue;
      const height = Math.max(0.5, (counts[label] / whole) * share * 100);
      top -= height;
      group.appendChild(svg('rect', { x: index * 10 + 1, y: top, width: 8, height, class: `seg ${paint(label)}` }));
    }
    if (start && end) {
      group.dataset.since = start.toISOString().replace('.000Z', 'Z');
      group.dataset.until = end.toISOString().replace('.000Z', 'Z');
      const narrow = () => go({ ...view.state, since: group.dataset.since, until: group.dataset.until });
      group.addEventListener('click', narrow);
      group.addEventListener('keydown', (event) => { if (event.key === 'Enter' || event.key === ' ') narrow(); });
    }
    return group;
  }

  // --- exports --------------------------------------------------------------------------------

  const TYPES = { csv: 'text/csv', jsonl: 'application/x-ndjson' };

  function fileName(disposition, format) {
    const m = /filename="([^"]+)"/.exec(disposition || '');
    return m ? m[1] : `activity.${format}`;
  }

  // Every page of the shown search, following X-Continuation, saved as one file.
  async function exportAll(format) {
    if (!view.state || view.exportAbort) return;
    const abort = new AbortController();
    view.exportAbort = abort;
    const status = $('export-status');
    $('export-cancel').hidden = false;
    const params = apiParams(view.state);
    params.set('format', format);
    params.set('limit', String(EXPORT_PAGE));
    const parts = [];
    const unreadable = new Set();  // blobs whose records are missing from the file
    let name = '';
    let bytes = 0;
    try {
      for (let page = 1; ; page += 1) {
        status.textContent = `Exporting page ${page} (${(bytes / 1e6).toFixed(1)} MB so far)…`;
        const response = await fetch(`${BASE}/activity?${params}`, { signal: abort.signal, credentials: 'same-origin' });
        if (!response.ok) {
          let body = null;
          try { body = await response.json(); } catch (error) { body = null; }
          throw new Error(failure(response.status, body));
        }
        name = name || fileName(response.headers.get('Content-Disposition'), format);
        const part = await response.blob();
        parts.push(part);
        bytes += part.size;
        (response.headers.get('X-Unreadable-Blobs') || '').split(',').filter(Boolean).forEach((blob) => unreadable.add(blob));
        const next = response.headers.get('X-Continuation');
        if (!next) break;
        // The service never hands back the token it was asked with; if it ever did, following
        // it would never end: said, not looped on.
        if (next === params.get('continuation')) throw new Error('the search did not move on (a defect: please report it)');
        params.set('continuation', next);
      }
      save(new Blob(parts, { type: TYPES[format] }), name);
      status.textContent = `Saved ${name} (${(bytes / 1e6).toFixed(2)} MB)`;
      if (unreadable.size) {
        status.textContent += `; ${unreadable.size} archive blob(s) could not be read and their events are missing from it: ${[...unreadable].slice(0, 3).join(', ')}`;
      }
      document.body.dataset.exported = name;
    } catch (error) {
      status.textContent = error.name === 'AbortError' ? 'Export cancelled' : `Export failed: ${error.message}`;
    } finally {
      view.exportAbort = null;
      $('export-cancel').hidden = true;
    }
  }

  function save(blob, name) {
    const url = URL.createObjectURL(blob);
    const a = el('a');
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  }

  // --- wiring ---------------------------------------------------------------------------------

  // Every search goes through the address, so Back, bookmarks and shared links all work.
  function go(state) {
    const next = address(state);
    if (location.hash === next) {
      fillForm(state);
      run(state);
    } else {
      location.hash = next;
    }
  }

  function fromAddress() {
    const state = readAddress();
    fillForm(state);
    run(state);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    go(readForm());
  });
  $('clear').addEventListener('click', () => go({ filters: {}, since: DEFAULT_RANGE, until: '', tz: readForm().tz, split: $('split').value }));
  $('range').addEventListener('change', () => {
    const custom = $('range').value === 'custom';
    $('custom-range').hidden = !custom;
    if (custom && !form.elements.namedItem('from').value) {
      const tz = $('tz').value;
      const now = new Date();
      form.elements.namedItem('from').value = isoToInput(new Date(now.getTime() - 86400000).toISOString(), tz);
      form.elements.namedItem('to').value = isoToInput(now.toISOString(), tz);
    }
  });
  $('tz').addEventListener('change', () => {
    // The shown times follow at once; a custom range keeps its instants.
    if (view.state) go({ ...view.state, tz: $('tz').value === 'local' ? 'local' : 'utc' });
  });
  $('split').addEventListener('change', () => {
    if (view.state) go({ ...view.state, split: $('split').value === 'category' ? 'category' : 'status' });
  });
  tbody.addEventListener('click', (event) => {
    const tr = event.target.closest('tr');
    if (tr) openRow(tr);
  });
  tbody.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && event.target.matches('tr')) openRow(event.target);
  });
  $('more').addEventListener('click', () => {
    view.autoPages = 0;
    loadPage(view.generation);
  });
  $('close-detail').addEventListener('click', closeDetail);
  $('copy-json').addEventListener('click', copyJson);
  $('export-csv').addEventListener('click', () => exportAll('csv'));
  $('export-jsonl').addEventListener('click', () => exportAll('jsonl'));
  $('export-cancel').addEventListener('click', () => { if (view.exportAbort) view.exportAbort.abort(); });
  window.addEventListener('hashchange', fromAddress);
  if ('IntersectionObserver' in window) {
    new IntersectionObserver((entries) => {
      const inView = entries.some((entry) => entry.isIntersecting);
      if (inView && view.continuation && !view.loading && view.records.length) {
        view.autoPages = 0;
        loadPage(view.generation);
      }
    }).observe($('sentinel'));
  }
  fromAddress();
})();
