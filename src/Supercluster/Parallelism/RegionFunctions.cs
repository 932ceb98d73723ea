using Supercluster.Distributed;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Supercluster.Parallelism;

/// <summary>
/// Collectives inside the model's computation, as autograd functions (Megatron-LM's "mappings"): each forward collective
/// is paired with the backward collective that makes the gradient right. On a group of one rank every function is the
/// identity and adds nothing to the graph.
/// <list type="bullet">
/// <item><see cref="CopyTo"/> (Megatron's f): identity forward, all-reduce backward — the input of a column-parallel layer.</item>
/// <item><see cref="ReduceFrom"/> (g): all-reduce forward, identity backward — the output of a row-parallel layer.</item>
/// <item><see cref="GatherAlong"/>: all-gather along a dimension forward, reduce-scatter backward — sequence parallelism's
///   entry into a TP region, context parallelism's keys and values.</item>
/// <item><see cref="ReduceScatterAlong"/>: reduce-scatter forward, all-gather backward — sequence parallelism's exit.</item>
/// <item><see cref="SplitAlong"/>: this rank's chunk forward, all-gather backward.</item>
/// </list>
/// </summary>
public static class Region
{
    public static Tensor CopyTo(Tensor x, ICommunicator group) => group.WorldSize == 1 ? x : CopyToFn.apply(x, group);
    public static Tensor ReduceFrom(Tensor x, ICommunicator group) => group.WorldSize == 1 ? x : ReduceFromFn.apply(x, group);
    public static Tensor GatherAlong(Tensor x, long dim, ICommunicator group) => group.WorldSize == 1 ? x : GatherFn.apply(x, dim, group);
    public static Tensor ReduceScatterAlong(Tensor x, long dim, ICommunicator group) => group.WorldSize == 1 ? x : ReduceScatterFn.apply(x, dim, group);
    public static Tensor SplitAlong(Tensor x, long dim, ICommunicator group) => group.WorldSize == 1 ? x : SplitFn.apply(x, dim, group);

    // Temporaries below are disposed at once: inside the step's dispose scope they would otherwise live until the step
    // ends, and under sequence parallelism the full-sequence copies of every layer added up to more activation memory
    // than sequence parallelism saves (bench/README.md). Disposing a handle frees nothing another handle still uses.

    /// <summary>Sum over the group, returned as a new tensor (the input is left alone).</summary>
    public static Tensor AllReduce(Tensor x, ICommunicator group)
    {
        using var c = x.contiguous();
        var y = c.clone();
        group.AllReduceSum(y);
        return y;
    }

    /// <summary>Every rank's x concatenated along <paramref name="dim"/> in rank order.</summary>
    public static Tensor AllGather(Tensor x, long dim, ICommunicator group)
    {
        using var view = x.movedim([dim], [0L]);
        using var moved = view.contiguous();                                   // [n, …]
        var shape = moved.shape.ToArray();
        shape[0] *= group.WorldSize;
        using var output = empty(shape, x.dtype, device: x.device);        // [world·n, …]
        group.AllGather(moved, output);
        return Contiguous(output.movedim([0L], [dim]));
    }

    /// <summary>This rank's block (along <paramref name="dim"/>, in rank order) of the sum over the group.</summary>
    public static Tensor ReduceScatter(Tensor x, long dim, ICommunicator group)
    {
        using var view = x.movedim([dim], [0L]);
        using var moved = view.contiguous();                                   // [world·n, …]
        var shape = moved.shape.ToArray();
        if (shape[0] % group.WorldSize != 0)
            throw new ArgumentException($"reduce-scatter along dim {dim}: size {shape[0]} is not divisible by the group's {group.WorldSize} ranks");
        shape[0] /= group.WorldSize;
        using var output = empty(shape, x.dtype, device: x.device);
        group.ReduceScatterSum(moved, output);
        return Contiguous(output.movedim([0L], [dim]));
    }

    /// <summary>
    /// A contiguous copy (the same tensor when it already is), the view disposed: a strided result would make the next
    /// matmul or norm copy it again, and autograd would keep both.
    /// </summary>
    static Tensor Contiguous(Tensor view)
    {
        using (view) return view.contiguous();
    }

    /// <summary>This rank's chunk of x along <paramref name="dim"/> (a copy).</summary>
    public static Tensor Chunk(Tensor x, long dim, ICommunicator group)
    {
        long n = x.shape[dim];
        if (n % group.WorldSize != 0)
            throw new ArgumentException($"split along dim {dim}: size {n} is not divisible by the group's {group.WorldSize} ranks");
        long part = n / group.WorldSize;
        return x.narrow(dim, group.Rank * part, part).contiguous();
    }

    sealed class CopyToFn : SingleTensorFunction<CopyToFn>
    {
        public override string Name => "CopyToRegion";
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("group", vars[1]);
            return ((Tensor)vars[0]).alias();
        }
        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => [AllReduce(grad, (ICommunicator)ctx.get_data("group")), null!];
    }

    sealed class ReduceFromFn : SingleTensorFunction<ReduceFromFn>
    {
        public override string Name => "ReduceFromRegion";
        public override Tensor forward(AutogradContext ctx, params object[] vars) => AllReduce((Tensor)vars[0], (ICommunicator)vars[1]);
        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) => [grad, null!];
    }

    sealed class GatherFn : SingleTensorFunction<GatherFn>
    {
        public override string Name => "GatherAlong";
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("dim", vars[1]);
            ctx.save_data("group", vars[2]);
            return AllGather((Tensor)vars[0], (long)vars[1], (ICommunicator)vars[2]);
        }
        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) =>
            [ReduceScatter(grad, (long)ctx.get_data("dim"), (ICommunicator)ctx.get_data("group")), null!, null!];
    }

    sealed class ReduceScatterFn : SingleTensorFunction<ReduceScatterFn>
    {
        public override string Name => "ReduceScatterAlong";
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("dim", vars[1]);
            ctx.save_data("group", vars[2]);
            return ReduceScatter((Tensor)vars[0], (long)vars[1], (ICommunicator)vars[2]);
        }
        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) =>
            [AllGather(grad, (long)ctx.get_data("dim"), (ICommunicator)ctx.get_data("group")), null!, null!];
    }

    sealed class SplitFn : SingleTensorFunction<SplitFn>
    {
        public override string Name => "SplitAlong";
        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            ctx.save_data("dim", vars[1]);
            ctx.save_data("group", vars[2]);
            return Chunk((Tensor)vars[0], (long)vars[1], (ICommunicator)vars[2]);
        }
        public override List<Tensor> backward(AutogradContext ctx, Tensor grad) =>
            [AllGather(grad, (long)ctx.get_data("dim"), (ICommunicator)ctx.get_data("group")), null!, null!];
    }
}
