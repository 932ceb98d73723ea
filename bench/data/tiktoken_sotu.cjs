// Single-thread tokenization rate of npm `tiktoken` (the WASM build of OpenAI's tiktoken) on the SOTU sample, GPT-2
// encoding, encode_ordinary semantics (no special tokens) + one EOT per document, as `prepare` counts.
// tokens_per_s: the encode loop alone, best of 3 passes (module load, get_encoding and reading excluded);
// process_tokens_per_s: tokens over the process's time from start to the end of its first pass (all of it included).
// usage: node tiktoken_sotu.cjs TIKTOKEN_PACKAGE_DIR SOTU_DATA_DIR
const fs = require("fs"), path = require("path");
const [pkg, data] = process.argv.slice(2);
const { get_encoding } = require(path.join(pkg, "tiktoken.cjs"));
const enc = get_encoding("gpt2");
const texts = fs.readdirSync(data).filter(f => f.endsWith(".json")).sort().map(f => JSON.parse(fs.readFileSync(path.join(data, f), "utf8")).text);
const chars = texts.reduce((a, t) => a + t.length, 0);
let best = Infinity, tokens = 0, firstPassProcess = 0;
for (let rep = 0; rep < 3; rep++) {
  const t0 = process.hrtime.bigint();
  tokens = 0;
  for (const t of texts) tokens += enc.encode_ordinary(t).length + 1;
  best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  if (rep === 0) firstPassProcess = process.uptime(); // end to end: node start, module load, get_encoding, reading, one cold pass
}
enc.free();
console.log(JSON.stringify({ docs: texts.length, chars, tokens, seconds: best, tokens_per_s: tokens / best,
  process_seconds: firstPassProcess, process_tokens_per_s: tokens / firstPassProcess }));
