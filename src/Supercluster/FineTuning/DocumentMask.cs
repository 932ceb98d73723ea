using Supercluster.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.FineTuning;

/// <summary>
/// Document masking for packed sequences: each end-of-text token ends a document (a conversation, or one padding
/// token), and a token attends only to earlier tokens of its own document, at positions counted from the document's
/// start. So a conversation packed after others computes exactly what it computes alone, at the start of a sequence
/// (as serving sees it). It is a <see cref="KvCache"/> that caches nothing: the model's one attention path takes its
/// positions and mask from here, and nothing in the model changes. The mask is dense [B, 1, T, T]; on a GPU SDPA then
/// uses its memory-efficient kernel, not flash attention.
/// </summary>
public sealed class DocumentMask : KvCache
{
    readonly Tensor _positions, _mask;

    /// <param name="ids">Input ids, row-major [B·T].</param>
    public DocumentMask(long[] ids, int batch, int seqLen, long documentEnd, Device device) : base(device)
    {
        var doc = new long[ids.Length];
        var pos = new long[ids.Length];
        for (int b = 0; b < batch; b++)
        {
            long d = 0, p = 0;
            for (int t = 0; t < seqLen; t++)
            {
                int i = b * seqLen + t;
                doc[i] = d;
                pos[i] = p++;
                if (ids[i] == documentEnd) { d++; p = 0; }   // the end-of-text belongs to the document it ends
            }
        }
        using var scope = NewDisposeScope();
        var docs = tensor(doc, [batch, seqLen], device: device);                                            // [B, T]
        var causal = ones(seqLen, seqLen, dtype: ScalarType.Bool, device: device).tril();                   // [T, T]
        _mask = docs.unsqueeze(2).eq(docs.unsqueeze(1)).logical_and_(causal).unsqueeze(1).DetachFromDisposeScope();   // [B, 1, T, T]
        _positions = tensor(pos, [batch, seqLen], device: device).DetachFromDisposeScope();                 // [B, T]
    }

    public override Tensor Positions(long t) => _positions;
    public override Tensor? Mask(long t) => _mask;
    public override (Tensor K, Tensor V) Append(int layer, Tensor k, Tensor v) => (k, v);
    public override void Advance(long tokens) { }

    public override void Dispose()
    {
        _positions.Dispose();
        _mask.Dispose();
        base.Dispose();
    }
}
