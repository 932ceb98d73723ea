using System.Numerics.Tensors;
using System.Text;
using System.Text.Json;

namespace Supercluster.Search;

/// <summary>A passage of a source document and its metadata (year, name, party, … plus doc and passage numbers).</summary>
public sealed record Passage(string Text, IReadOnlyDictionary<string, string> Metadata);

/// <summary>Header of an index file: how its vectors were made.</summary>
public sealed record IndexHeader(int Dimension, int Count, string Model, string Tokenizer, int PassageTokens, string Pooling, DateTime Created);

public sealed record SearchHit(int Index, float Score, Passage Passage);

/// <summary>
/// Unit vectors with their passages, searched exactly: score = dot product (= cosine, vectors are normalised),
/// computed with SIMD (<see cref="TensorPrimitives.Dot(ReadOnlySpan{float}, ReadOnlySpan{float})"/>) over one
/// contiguous float array, top-k kept in a small heap.
///
/// File format (little-endian): magic "SCINDEX1" (8 bytes); int32 header length + UTF-8 JSON <see cref="IndexHeader"/>;
/// Count × Dimension float32 vectors, row-major; int32 length + UTF-8 JSON array of passages {text, metadata}.
/// </summary>
public sealed class VectorIndex
{
    static readonly byte[] Magic = "SCINDEX1"u8.ToArray();
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    readonly float[] _vectors;

    public VectorIndex(IndexHeader header, float[] vectors, IReadOnlyList<Passage> passages)
    {
        if (vectors.Length != (long)header.Dimension * header.Count || passages.Count != header.Count)
            throw new ArgumentException("vectors, passages and header disagree");
        Header = header;
        _vectors = vectors;
        Passages = passages;
    }

    public IndexHeader Header { get; }
    public IReadOnlyList<Passage> Passages { get; }
    public int Count => Header.Count;
    public ReadOnlySpan<float> Vector(int i) => _vectors.AsSpan(i * Header.Dimension, Header.Dimension);

    /// <summary>The <paramref name="k"/> passages most similar to the unit vector <paramref name="query"/>, best first.</summary>
    public IReadOnlyList<SearchHit> Search(ReadOnlySpan<float> query, int k) => Search(query, k, null);

    /// <summary>As above, among the rows <paramref name="allowed"/> admits (all when null).</summary>
    public IReadOnlyList<SearchHit> Search(ReadOnlySpan<float> query, int k, System.Collections.BitArray? allowed)
    {
        if (query.Length != Header.Dimension) throw new BadInputException($"query has {query.Length} dimensions, the index {Header.Dimension}");
        k = Math.Clamp(k, 0, Count);
        var heap = new PriorityQueue<int, float>(k + 1); // min-heap of the best k so far
        for (int i = 0; i < Count; i++)
        {
            if (allowed is not null && !allowed[i]) continue;
            float s = TensorPrimitives.Dot(query, Vector(i));
            if (heap.Count < k) heap.Enqueue(i, s);
            else if (k > 0 && heap.TryPeek(out _, out var worst) && s > worst) heap.EnqueueDequeue(i, s);
        }
        var hits = new List<SearchHit>(k);
        while (heap.TryDequeue(out var i, out var s)) hits.Add(new SearchHit(i, s, Passages[i]));
        hits.Reverse();
        return hits;
    }

    public void Write(string path)
    {
        var tmp = path + ".tmp";
        using (var stream = File.Create(tmp))
        using (var f = new BinaryWriter(stream))
        {
            f.Write(Magic);
            var header = JsonSerializer.SerializeToUtf8Bytes(Header, Json);
            f.Write(header.Length); f.Write(header);
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(_vectors.AsSpan());
            f.Write(bytes);
            var passages = JsonSerializer.SerializeToUtf8Bytes(Passages, Json);
            f.Write(passages.Length); f.Write(passages);
            f.Flush();
            stream.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
    }

    /// <summary>Reads a vector file, or the one inside a search index directory (<see cref="SearchIndex.VectorFile"/>).</summary>
    public static VectorIndex Read(string path)
    {
        if (Directory.Exists(path)) path = Path.Combine(path, SearchIndex.VectorFile);
        if (!File.Exists(path)) throw new BadInputException($"index {path} does not exist");
        try
        {
            using var f = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
            if (!f.ReadBytes(Magic.Length).AsSpan().SequenceEqual(Magic)) throw new BadInputException($"{path} is not a Supercluster index (bad magic)");
            var header = JsonSerializer.Deserialize<IndexHeader>(f.ReadBytes(f.ReadInt32()), Json) ?? throw new BadInputException($"{path}: empty header");
            var vectors = new float[(long)header.Count * header.Dimension];
            var bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(vectors.AsSpan());
            if (f.Read(bytes) != bytes.Length) throw new BadInputException($"{path} is truncated");
            var passages = JsonSerializer.Deserialize<List<Passage>>(f.ReadBytes(f.ReadInt32()), Json) ?? [];
            if (passages.Count != header.Count) throw new BadInputException($"{path} is truncated ({passages.Count} of {header.Count} passages)");
            return new VectorIndex(header, vectors, passages);
        }
        catch (Exception e) when (e is EndOfStreamException or JsonException or IOException)
        {
            throw new BadInputException($"{path}: corrupt index ({e.Message})");
        }
    }
}
