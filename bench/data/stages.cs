#:project ../../src/Supercluster/Supercluster.csproj
#:property PublishAot=false
#:property Configuration=Release
// prepare's per-document stages and whole runs in one process, in CPU time (bench/README.md, docs/data.md):
//   dotnet run -c Release bench/data/stages.cs -- CORPUS.jsonl [rounds]
// Part 1: each stage alone on one thread over every document (reading and JSON parsing, tokenizing, filters, PII,
// normalising, exact key, word spans, MinHash), best of `rounds`: what near + filters + PII add per document.
// Part 2: Preparer.Run in this process, tokenize-only, near + filters + PII, near alone and filters + PII alone
// alternating, `rounds` each: wall time
// (best of) and the process's CPU time (best of; the sum over its threads, which other jobs' load does not inflate),
// with the phases of the best wall run. The ratio of the two modes is the issue's "cost on top of tokenizing".
using System.Diagnostics;
using System.Runtime.InteropServices;
using Supercluster.Data;
using Supercluster.Data.Pipeline;
using Supercluster.Tokenization;

var corpus = args[0];
int rounds = args.Length > 1 ? int.Parse(args[1]) : 5;
var docs = CorpusReader.Read([corpus]).ToList();
long chars = docs.Sum(d => (long)d.Text.Length);
Console.WriteLine($"corpus {corpus}: {docs.Count:N0} documents, {chars:N0} characters; {Environment.ProcessorCount} cores; load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

var tokenizer = Tokenizers.Create("gpt2");
var filter = new QualityFilter(["min_words=20", "min_stop_words=0"]);
var minHash = new MinHash();
var pii = new long[3];
var texts = docs.Select(d => d.Text).ToArray();
var normalized = texts.Select(TextNormalizer.Normalize).ToArray();
var spans = new List<(int Start, int Length)>();
var wordSpans = normalized.Select(n => TextNormalizer.WordSpans(n).ToArray()).ToArray();

// Thread CPU time of one pass over every document, best of `rounds` (the first pass also warms the JIT).
double Cpu(Action<int> perDoc)
{
    double best = double.MaxValue;
    for (int r = 0; r <= rounds; r++)
    {
        var t0 = ThreadCpu();
        for (int i = 0; i < texts.Length; i++) perDoc(i);
        if (r > 0) best = Math.Min(best, ThreadCpu() - t0);
    }
    return best;
}
var stages = new (string Name, bool Near, Action<int> Run)[]
{
    ("tokenize (gpt2)", false, i => tokenizer.Encode(texts[i])),
    ("normalize", false, i => TextNormalizer.Normalize(texts[i])),
    ("exact key", false, i => TextNormalizer.ExactKey(normalized[i])),
    ("filter", true, i => filter.Check(texts[i])),
    ("scrub PII", true, i => PiiScrubber.Scrub(texts[i], pii)),
    ("word spans", true, i => TextNormalizer.WordSpans(normalized[i])),
    ("normalize + spans", true, i => TextNormalizer.Normalize(texts[i], spans)), // what near dedup runs instead of normalize, then word spans
    ("minhash (given spans)", true, i => minHash.Signature(normalized[i], wordSpans[i])),
};
double readCpu = double.MaxValue;
for (int r = 0; r <= rounds; r++)
{
    var t0 = ThreadCpu();
    int n = CorpusReader.Read([corpus]).Count();
    if (r > 0) readCpu = Math.Min(readCpu, ThreadCpu() - t0);
}
double baseCpu = readCpu;
var cpuOf = new Dictionary<string, double>();
Console.WriteLine($"{"stage (one thread)",-22} {"CPU s",8} {"µs/doc",8}");
Console.WriteLine($"{"read (UTF-8 + JSON)",-22} {readCpu,8:0.000} {readCpu * 1e6 / texts.Length,8:0.0}");
foreach (var (name, isNear, run) in stages)
{
    double s = cpuOf[name] = Cpu(run);
    if (!isNear) baseCpu += s;
    Console.WriteLine($"{name,-22} {s,8:0.000} {s * 1e6 / texts.Length,8:0.0}");
}
// Near + filters + PII = filter + PII + MinHash + what the spans add to normalising (prepare takes them from that pass).
double nearCpu = cpuOf["filter"] + cpuOf["scrub PII"] + cpuOf["minhash (given spans)"] + cpuOf["normalize + spans"] - cpuOf["normalize"];
Console.WriteLine($"tokenize-only stages {baseCpu:0.000} s; near + filters + PII add {nearCpu:0.000} s (+{100 * nearCpu / baseCpu:0}%) per pass, before deduplication itself");

// Part 2: whole runs.
var outDir = Path.Combine(Path.GetTempPath(), $"stages-{Environment.ProcessId}");
var modes = new (string Name, PrepareOptions Options)[]
{
    ("tokenize", new PrepareOptions { OutDir = outDir }),
    ("near+filter+pii", new PrepareOptions { OutDir = outDir, Dedup = DedupMode.Near, Filter = filter, ScrubPii = true }),
    ("near", new PrepareOptions { OutDir = outDir, Dedup = DedupMode.Near }),
    ("filter+pii", new PrepareOptions { OutDir = outDir, Filter = filter, ScrubPii = true }),
};
var best = modes.Select(_ => (Wall: double.MaxValue, Cpu: double.MaxValue, Phases: "")).ToArray();
for (int r = 0; r <= rounds; r++)
    for (int m = 0; m < modes.Length; m++)
    {
        GC.Collect();
        var p = Process.GetCurrentProcess();
        var c0 = p.TotalProcessorTime;
        var result = Preparer.Run(CorpusReader.Read([corpus]), modes[m].Options);
        p.Refresh();
        double cpu = (p.TotalProcessorTime - c0).TotalSeconds, wall = result.Elapsed.TotalSeconds;
        if (r == 0) continue; // warm-up
        if (wall < best[m].Wall) best[m] = (wall, best[m].Cpu, string.Join(", ", result.Phases.Select(ph => $"{ph.Phase} {ph.Seconds:0.000}")));
        best[m].Cpu = Math.Min(best[m].Cpu, cpu);
    }
Directory.Delete(outDir, true);
for (int m = 0; m < modes.Length; m++)
    Console.WriteLine($"{modes[m].Name,-16} wall {best[m].Wall,6:0.000} s  CPU {best[m].Cpu,6:0.000} s  (best of {rounds}; phases of the best: {best[m].Phases})");
for (int m = 2; m < modes.Length; m++)
    Console.WriteLine($"{modes[m].Name} alone over tokenize-only: wall +{100 * (best[m].Wall / best[0].Wall - 1):0}%, CPU +{100 * (best[m].Cpu / best[0].Cpu - 1):0}%");
Console.WriteLine($"near + filters + PII over tokenize-only, 1 process: wall +{100 * (best[1].Wall / best[0].Wall - 1):0}%, CPU +{100 * (best[1].Cpu / best[0].Cpu - 1):0}% (target <= +50%); load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");

// CLOCK_THREAD_CPUTIME_ID: this thread's CPU seconds.
static double ThreadCpu()
{
    clock_gettime(3, out var ts);
    return ts.Sec + ts.Nsec * 1e-9;
}
[DllImport("libc")] static extern int clock_gettime(int clock, out TimeSpec ts);
struct TimeSpec { public long Sec, Nsec; }
