using System.Collections;
using System.Net;
using Lucene.Net.Analysis;
using Lucene.Net.Analysis.En;
using Lucene.Net.Documents;
using Lucene.Net.Index;
using Lucene.Net.QueryParsers.Classic;
using Lucene.Net.Search;
using Lucene.Net.Search.Highlight;
using Lucene.Net.Search.Similarities;
using Lucene.Net.Store;
using Lucene.Net.Util;
using LuceneDirectory = Lucene.Net.Store.Directory;

namespace Supercluster.Search;

/// <summary>A passage as the keyword index sees it: its row in the vector file, its document's id, text and fields.</summary>
public sealed record KeywordPassage(int Row, string DocId, string Text, IReadOnlyDictionary<string, string> Fields);

/// <summary>
/// BM25 (k1 = 1.2, b = 0.75) over passages with Lucene.Net 4.8, English analysis (standard tokenizer, lower case,
/// English stop words, Porter stemming). One Lucene document per passage: <c>_row</c> (its row in the vector file,
/// as doc values), <c>_id</c> (document id, for deletes), <c>_text</c> (analysed, not stored: the vector file holds the
/// text), and per field <c>f:NAME</c> (exact value) plus <c>n:NAME</c> (number or UTC milliseconds) for ranges.
/// </summary>
public sealed class KeywordIndex : IDisposable
{
    public const string Analysis = "lucene-4.8 EnglishAnalyzer, BM25(k1=1.2, b=0.75)";
    public const string FieldPrefix = "f:";
    public const string RangePrefix = "n:";
    const string RowField = "_row", IdField = "_id", TextField = "_text";
    static readonly LuceneVersion Version = LuceneVersion.LUCENE_48;

    readonly LuceneDirectory _dir;
    readonly DirectoryReader _reader;
    readonly IndexSearcher _searcher;
    readonly NumericDocValues _rows;

    KeywordIndex(LuceneDirectory dir)
    {
        _dir = dir;
        _reader = DirectoryReader.Open(dir);
        _searcher = new IndexSearcher(_reader) { Similarity = new BM25Similarity() };
        _rows = MultiDocValues.GetNumericValues(_reader, RowField) ?? DocValues.EMPTY_NUMERIC;
    }

    public static Analyzer NewAnalyzer() => new EnglishAnalyzer(Version);

    /// <summary>Live (not deleted) passages.</summary>
    public int Count => _reader.NumDocs;

    /// <summary>Opens the index in <paramref name="path"/>; with <paramref name="verify"/>, every file's checksum (Lucene's CRC32 footers).</summary>
    public static KeywordIndex Open(string path, bool verify)
    {
        var dir = FSDirectory.Open(path);
        try
        {
            var index = new KeywordIndex(dir);
            if (verify) foreach (var leaf in index._reader.Leaves) leaf.AtomicReader.CheckIntegrity();
            return index;
        }
        catch { dir.Dispose(); throw; }
    }

    /// <summary>An in-memory index of <paramref name="passages"/> (for vector files written before keyword indexes existed).</summary>
    public static KeywordIndex InMemory(IEnumerable<KeywordPassage> passages, IReadOnlyDictionary<string, FieldKind> schema)
    {
        var dir = new RAMDirectory();
        using (var w = NewWriter(dir, create: true))
        {
            foreach (var p in passages) w.AddDocument(ToDocument(p, schema));
            w.Commit();
        }
        return new KeywordIndex(dir);
    }

    /// <summary>Opens a writer on <paramref name="path"/>: a new index, or appending to the one there.</summary>
    public static Writer OpenWriter(string path, bool create, IReadOnlyDictionary<string, FieldKind> schema) => new(FSDirectory.Open(path), create, schema);

    /// <summary>Adds and deletes passages; <see cref="Commit"/> makes them durable (Lucene fsyncs the files it commits).</summary>
    public sealed class Writer : IDisposable
    {
        readonly LuceneDirectory _dir;
        readonly IndexWriter _w;
        readonly IReadOnlyDictionary<string, FieldKind> _schema;

        internal Writer(LuceneDirectory dir, bool create, IReadOnlyDictionary<string, FieldKind> schema)
        {
            _dir = dir; _schema = schema;
            try { _w = NewWriter(dir, create); } catch { dir.Dispose(); throw; }
        }

        public void Add(KeywordPassage p) => _w.AddDocument(ToDocument(p, _schema));
        public void Delete(IEnumerable<string> docIds) => _w.DeleteDocuments(docIds.Select(id => new Term(IdField, id)).ToArray());
        public void Commit() { _w.ForceMergeDeletes(); _w.Commit(); }
        public void Dispose() { _w.Dispose(); _dir.Dispose(); }
    }

    static IndexWriter NewWriter(LuceneDirectory dir, bool create) =>
        new(dir, new IndexWriterConfig(Version, NewAnalyzer())
        {
            OpenMode = create ? OpenMode.CREATE : OpenMode.APPEND,
            Similarity = new BM25Similarity(),
            RAMBufferSizeMB = 64,
        });

    static Document ToDocument(KeywordPassage p, IReadOnlyDictionary<string, FieldKind> schema)
    {
        var d = new Document
        {
            new NumericDocValuesField(RowField, p.Row),
            new StringField(IdField, p.DocId, Field.Store.NO),
            new TextField(TextField, p.Text, Field.Store.NO),
        };
        foreach (var (name, value) in p.Fields)
        {
            d.Add(new StringField(FieldPrefix + name, value, Field.Store.NO));
            switch (schema.GetValueOrDefault(name))
            {
                case FieldKind.Date when FieldValues.TryDate(value, out var ms): d.Add(new Int64Field(RangePrefix + name, ms, Field.Store.NO)); break;
                case FieldKind.Number when FieldValues.TryNumber(value, out var x): d.Add(new DoubleField(RangePrefix + name, x, Field.Store.NO)); break;
            }
        }
        return d;
    }

    /// <summary>The parsed keyword query (plain text: Lucene syntax characters are escaped), or null when no term survives analysis.</summary>
    public static Query? ParseQuery(string text)
    {
        var parser = new QueryParser(Version, TextField, NewAnalyzer()) { DefaultOperator = Operator.OR };
        var q = parser.Parse(QueryParserBase.Escape(text));
        return q is BooleanQuery { Clauses.Count: 0 } ? null : q;
    }

    /// <summary>The best <paramref name="n"/> passages by BM25 among those <paramref name="filter"/> admits: (row, score), best first.</summary>
    public IReadOnlyList<(int Row, float Score)> Search(Query? query, Query? filter, int n)
    {
        if (query is null || n <= 0) return [];
        var top = filter is null ? _searcher.Search(query, n) : _searcher.Search(query, new QueryWrapperFilter(filter), n);
        return top.ScoreDocs.Select(sd => ((int)_rows.Get(sd.Doc), sd.Score)).ToList();
    }

    /// <summary>Rows of the live passages <paramref name="filter"/> admits (all live ones when null).</summary>
    public BitArray Rows(Query? filter, int rowCount)
    {
        var bits = new BitArray(rowCount);
        _searcher.Search(filter ?? new MatchAllDocsQuery(), new RowCollector(bits));
        return bits;
    }

    /// <summary>
    /// The best fragment (≈ <paramref name="chars"/> characters) of <paramref name="text"/> with the query's terms in
    /// <c>&lt;mark&gt;…&lt;/mark&gt;</c>; HTML-escaped. The text's start when no term matches.
    /// </summary>
    public static string Snippet(Query? query, string text, int chars = 200)
    {
        if (query is not null)
        {
            var h = new Highlighter(new SimpleHTMLFormatter("<mark>", "</mark>"), new SimpleHTMLEncoder(), new QueryScorer(query, TextField))
            {
                TextFragmenter = new SimpleFragmenter(chars),
                MaxDocCharsToAnalyze = Math.Max(text.Length, 1),
            };
            using var analyzer = NewAnalyzer();
            var best = h.GetBestFragment(analyzer, TextField, text);
            if (best is not null) return best.Trim();
        }
        return WebUtility.HtmlEncode(text.Length > chars ? text[..chars] + "…" : text);
    }

    sealed class RowCollector(BitArray bits) : ICollector
    {
        NumericDocValues? _rows;
        public void SetScorer(Scorer scorer) { }
        public void Collect(int doc) => bits[(int)_rows!.Get(doc)] = true;
        public void SetNextReader(AtomicReaderContext context) => _rows = context.AtomicReader.GetNumericDocValues(RowField);
        public bool AcceptsDocsOutOfOrder => true;
    }

    public void Dispose()
    {
        _reader.Dispose();
        _dir.Dispose();
    }
}
