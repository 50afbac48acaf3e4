// Builds the fleet page into the Python package (himbeerecouch/ops/web/), which
// `himbeerecouch provision` uploads as attachments of _design/himbeerecouch:
//
//   index.html, style.css    copied from src/
//   app.js, app.css          src/main.jsx and everything it imports (Preact,
//                            CodeMirror 6, uPlot and its stylesheet), bundled
//                            and minified by esbuild
//   THIRD-PARTY.txt          the licenses of the bundled npm packages
//   build-info.json          what was built from what: the SHA-256 of the
//                            sources, so a test can tell a stale build
//
// Run: make web   (or: cd web && npm ci && node build.mjs)

import {build} from 'esbuild';
import {createHash} from 'node:crypto';
import {mkdirSync, readFileSync, readdirSync, writeFileSync} from 'node:fs';
import {dirname, join, relative} from 'node:path';
import {fileURLToPath} from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const out = join(here, '..', 'himbeerecouch', 'ops', 'web');

// Sources outside web/ that the page imports (paths relative to web/).
const SHARED = ['../himbeerecouch/ops/design/classify.js'];

// The files whose content makes the build: the Python test hashes the same list.
export function sourceFiles() {
  const files = readdirSync(src).filter((f) => !f.startsWith('.')).sort().map((f) => 'src/' + f);
  return ['build.mjs', 'package.json', 'package-lock.json', ...files, ...SHARED];
}

export function sourceHash() {
  const h = createHash('sha256');
  for (const f of sourceFiles()) {
    h.update(f + '\0');
    h.update(readFileSync(join(here, f)));
    h.update('\0');
  }
  return h.digest('hex');
}

function packageOf(input) {
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
  return m ? m[1] : null;
}

function licenses(inputs) {
  const names = [...new Set(inputs.map(packageOf).filter(Boolean))].sort();
  const parts = ['The fleet page (app.js) bundles these npm packages; their licenses follow.\n'];
  for (const name of names) {
    const dir = join(here, 'node_modules', name);
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
    const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
    const text = file ? readFileSync(join(dir, file), 'utf8').trim() : `License: ${pkg.license}`;
    parts.push(`${'='.repeat(72)}\n${name} ${pkg.version} (${pkg.license})\n${'='.repeat(72)}\n${text}\n`);
  }
  return parts.join('\n');
}

async function main() {
  mkdirSync(out, {recursive: true});
  const result = await build({
    entryPoints: [join(src, 'main.jsx')],
    outfile: join(out, 'app.js'),
    bundle: true,
    minify: true,
    format: 'iife',
    target: 'es2020',
    jsx: 'automatic',
    jsxImportSource: 'preact',
    legalComments: 'none',
    charset: 'utf8',
    metafile: true,
    logLevel: 'warning',
  });
  for (const name of ['index.html', 'style.css']) {
    writeFileSync(join(out, name), readFileSync(join(src, name)));
  }
  const inputs = Object.keys(result.metafile.inputs);
  writeFileSync(join(out, 'THIRD-PARTY.txt'), licenses(inputs));
  const files = readdirSync(out).filter((f) => f !== 'build-info.json' && !f.startsWith('.') &&
    !f.endsWith('.py')).sort();
  const info = {
    built_from: 'web/ (cd web && npm ci && node build.mjs)',
    source_sha256: sourceHash(),
    sources: sourceFiles(),
    files,
    bundled_packages: [...new Set(inputs.map(packageOf).filter(Boolean))].sort(),
  };
  writeFileSync(join(out, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
  const size = readFileSync(join(out, 'app.js')).length;
  console.log(`built ${relative(process.cwd(), out)}: ${files.join(', ')} (app.js ${Math.round(size / 1024)} KiB)`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
