using Supercluster.Data;
using Supercluster.Inference;
using Supercluster.Tokenization;

namespace Supercluster.Search;

/// <summary>Splits documents into passages of a fixed token count and embeds them into a <see cref="VectorIndex"/>.</summary>
public static class IndexBuilder
{
    /// <summary>
    /// Passages of at most <paramref name="passageTokens"/> tokens (0 = whole documents, cut at the context).
    /// Metadata keeps the document's fields plus <c>doc</c> (its number) and <c>passage</c> (number within it).
    /// </summary>
    public static IEnumerable<(Passage Passage, int[] Tokens)> Split(IEnumerable<Document> docs, TextTokenizer tok, int passageTokens, int context)
    {
        int size = passageTokens <= 0 ? context : Math.Min(passageTokens, context);
        int docNo = 0;
        foreach (var d in docs)
        {
            var ids = tok.Encode(d.Text);
            int part = 0;
            for (int start = 0; start < ids.Length; start += size)
            {
                var chunk = ids[start..Math.Min(ids.Length, start + size)];
                var meta = new Dictionary<string, string>(d.Metadata ?? new Dictionary<string, string>())
                {
                    ["doc"] = docNo.ToString(), ["passage"] = part.ToString(),
                };
                yield return (new Passage(tok.Decode(chunk), meta), chunk);
                part++;
                if (passageTokens <= 0) break;
            }
            docNo++;
        }
    }

    public static VectorIndex Build(IEnumerable<Document> docs, Embedder embedder, TextTokenizer tok, int passageTokens, string model, Action<int>? progress = null)
    {
        var passages = new List<Passage>();
        var vectors = new List<float>();
        foreach (var batch in Split(docs, tok, passageTokens, embedder.Context).Chunk(64))
        {
            var embedded = embedder.Embed(batch.Select(b => b.Tokens).ToArray());
            passages.AddRange(batch.Select(b => b.Passage));
            foreach (var v in embedded) vectors.AddRange(v);
            progress?.Invoke(passages.Count);
        }
        var header = new IndexHeader(embedder.Dimension, passages.Count, model, tok.Name, passageTokens, "mean of final hidden states, L2-normalised", DateTime.UtcNow);
        return new VectorIndex(header, vectors.ToArray(), passages);
    }
}
