using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Tokenization;

namespace Supercluster.Search;

/// <summary>Embeds documents into a bare <see cref="VectorIndex"/> file (no keyword index; <see cref="SearchIndex.Build"/> makes both).</summary>
public static class IndexBuilder
{
    /// <summary>What <see cref="Embedder"/> computes, as recorded in every index header.</summary>
    public const string Pooling = "mean over positions of the final hidden states (after the last norm), L2-normalised";

    /// <summary>The model's embedder with its provenance (the checkpoint's weights hash), for <see cref="SearchIndex"/>.</summary>
    public static EmbeddingModel Model(Embedder embedder, TextTokenizer tok, string checkpointDir) =>
        new(embedder.Embed, tok, embedder.Dimension, embedder.Context, checkpointDir, ModelFingerprint.Of(checkpointDir), Pooling);

    /// <summary>
    /// Passages of at most <paramref name="passageTokens"/> tokens (0 = the model's context).
    /// Metadata keeps the document's fields plus <c>doc</c> (its number), <c>passage</c> (number within it) and its offsets.
    /// </summary>
    public static VectorIndex Build(IEnumerable<Document> docs, Embedder embedder, TextTokenizer tok, int passageTokens, string model, Action<int>? progress = null)
    {
        int size = passageTokens <= 0 ? embedder.Context : Math.Min(passageTokens, embedder.Context);
        var passages = new List<Passage>();
        var vectors = new List<float>();
        var split = docs.SelectMany((d, docNo) => PassageSplitter.Split(d.Text, tok, size).Select((span, part) =>
        {
            var meta = new Dictionary<string, string>(d.Metadata ?? new Dictionary<string, string>())
            {
                [SearchIndex.DocKey] = docNo.ToString(), [SearchIndex.PassageKey] = part.ToString(),
                [SearchIndex.StartKey] = span.Start.ToString(), [SearchIndex.EndKey] = span.End.ToString(),
            };
            return (Passage: new Passage(span.Start >= 0 ? d.Text[span.Start..span.End] : tok.Decode(span.Tokens), meta), span.Tokens);
        }));
        foreach (var batch in split.Chunk(64))
        {
            var embedded = embedder.Embed(batch.Select(b => b.Tokens).ToArray());
            passages.AddRange(batch.Select(b => b.Passage));
            foreach (var v in embedded) vectors.AddRange(v);
            progress?.Invoke(passages.Count);
        }
        var header = new IndexHeader(embedder.Dimension, passages.Count, model, tok.Name, passageTokens, Pooling, DateTime.UtcNow);
        return new VectorIndex(header, vectors.ToArray(), passages);
    }
}
