using Supercluster.Distributed;
using Supercluster.Model;
using Supercluster.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.autograd;

namespace Supercluster.Parallelism;

/// <summary>
/// Fully sharded data parallelism: ZeRO-3 (Rajbhandari et al. 2020), as PyTorch FSDP runs it (Zhao et al. 2023).
/// The parameters are grouped into units — each block, and each other top-level module (embeddings, final norm, head)
/// — and each unit's parameters, flattened and padded to a multiple of D, split into D equal shards. A rank keeps only
/// its shard of every unit, fp32, end to end in <see cref="Values"/>; the model's own parameter tensors are emptied.
/// <para>
/// Each <see cref="CausalLM.RunUnit"/> call becomes one autograd function (<see cref="UnitFn"/>) whose inputs are the
/// unit's input and its shards. Forward: all-gather the shards into one buffer the module's parameters view, run the unit
/// without recording a graph, free the buffer. Backward: all-gather again, recompute the unit's forward with a graph
/// (as activation checkpointing does), take the gradients of its input and parameters, free the buffer, and
/// reduce-scatter the parameters' gradients: they are the shards' gradients, which autograd sums into
/// <see cref="Gradients"/> across micro-batches and across the units that share a parameter (GPT-2's tied wte).
/// TorchSharp 0.107 can neither hook a parameter's gradient nor resize a storage to zero (FSDP's way of freeing a
/// parameter that autograd has saved), so the recomputation is what lets parameters be freed between forward and
/// backward: one more forward per unit, as FSDP with activation checkpointing pays.
/// </para>
/// Between steps a rank holds 1/D of the parameters, gradients and optimizer state (<see cref="ResidentMemory"/>
/// measures it). Under bf16 the fp32 shards are gathered and cast to bf16 locally (gathering bf16 would need it in every
/// backend), and the bf16 gradients are cast to fp32 before the reduce-scatter, so the reduction stays fp32.
/// </summary>
public sealed class FullyShard : IDisposable
{
    sealed class Unit
    {
        public required string Name;
        public required string[] ParameterNames;
        public required (long Offset, long Length, long[] Shape)[] Places;  // within the unit's flat vector
        public Parameter[] Parameters = [];
        public long Padded, ShardLength, ShardOffset;                      // ShardOffset: in this rank's Values
        public Tensor Shard = null!;                                         // a leaf view of Values; .grad a view of Gradients
        public Tensor? Full;                                                 // the gathered parameters while in use
    }

    readonly CausalLM _model;
    readonly ICommunicator _comm;
    readonly List<Unit> _units = [];
    readonly Dictionary<string, Unit> _byName = [];
    readonly (string Name, Unit Unit, int Index, long GlobalOffset, long Length, int Dim, bool Trainable)[] _items;
    readonly Tensor _empty;   // what a released parameter is set to (0 elements, the compute dtype)
    bool _unsharded;

    /// <param name="model">fp32 parameters on the training device, weights already loaded; bf16 compute: <paramref name="computeDtype"/>.</param>
    public FullyShard(CausalLM model, ICommunicator comm, ScalarType computeDtype)
    {
        _model = model;
        _comm = comm;
        ComputeDtype = computeDtype;
        var named = model.named_parameters().ToArray();
        var device = named[0].parameter.device;
        foreach (var (name, p) in named)
        {
            string unitName = UnitOf(name);
            if (!_byName.TryGetValue(unitName, out var u))
            {
                u = new Unit { Name = unitName, ParameterNames = [], Places = [] };
                _byName[unitName] = u;
                _units.Add(u);
            }
            u.ParameterNames = [.. u.ParameterNames, name];
            u.Places = [.. u.Places, (u.Places.Length == 0 ? 0 : u.Places[^1].Offset + u.Places[^1].Length, p.numel(), p.shape)];
        }
        long shardOffset = 0;
        foreach (var u in _units)
        {
            long count = u.Places[^1].Offset + u.Places[^1].Length;
            u.Padded = (count + comm.WorldSize - 1) / comm.WorldSize * comm.WorldSize;
            u.ShardLength = u.Padded / comm.WorldSize;
            u.ShardOffset = shardOffset;
            shardOffset += u.ShardLength;
        }
        long global = 0;
        _items = [.. named.Select(p =>
        {
            var u = _byName[UnitOf(p.name)];
            int i = Array.IndexOf(u.ParameterNames, p.name);
            var item = (p.name, u, i, global, p.parameter.numel(), (int)p.parameter.dim(), p.parameter.requires_grad);
            global += p.parameter.numel();
            return item;
        })];
        Count = global;
        Values = zeros(shardOffset, device: device).DetachFromDisposeScope();
        Gradients = zeros(shardOffset, device: device).DetachFromDisposeScope();
        using (no_grad())
        {
            var byName = named.ToDictionary(p => p.name, p => p.parameter);
            foreach (var u in _units)
            {
                using var scope = NewDisposeScope();
                var full = zeros(u.Padded, device: device);
                for (int i = 0; i < u.ParameterNames.Length; i++)
                {
                    var p = byName[u.ParameterNames[i]];
                    if (p.dtype != ScalarType.Float32) throw new InvalidOperationException($"fully sharded parameters start fp32; {u.ParameterNames[i]} is {p.dtype}");
                    full.narrow(0, u.Places[i].Offset, u.Places[i].Length).copy_(p.detach().reshape(-1));
                }
                Values.narrow(0, u.ShardOffset, u.ShardLength).copy_(full.narrow(0, comm.Rank * u.ShardLength, u.ShardLength));
                u.Shard = Values.narrow(0, u.ShardOffset, u.ShardLength).detach().requires_grad_(true).DetachFromDisposeScope();
                u.Shard.grad = Gradients.narrow(0, u.ShardOffset, u.ShardLength);
            }
        }
        if (computeDtype != ScalarType.Float32) model.to(computeDtype);   // new parameter tensors, emptied next
        var live = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var u in _units) u.Parameters = [.. u.ParameterNames.Select(n => live[n])];
        _empty = empty(0, dtype: computeDtype, device: device).DetachFromDisposeScope();
        foreach (var u in _units) Release(u);
        model.RunUnit = Run;
    }

    /// <summary>The unit a parameter belongs to: "h.3" for h.3.attn.c_attn.weight (a block of a module list), else its top-level module ("wte").</summary>
    public static string UnitOf(string parameterName)
    {
        var parts = parameterName.Split('.');
        return parts.Length > 2 && int.TryParse(parts[1], out _) ? $"{parts[0]}.{parts[1]}" : parts[0];
    }

    public ScalarType ComputeDtype { get; }
    /// <summary>The model's parameter count.</summary>
    public long Count { get; }
    /// <summary>This rank's shard of every unit (fp32, unit after unit): what its optimizer updates.</summary>
    public Tensor Values { get; }
    /// <summary>Gradients of <see cref="Values"/>: reduce-scattered sums over ranks, accumulated over micro-batches.</summary>
    public Tensor Gradients { get; }
    /// <summary>Unit names in model order, and each unit's shard length on this rank.</summary>
    public IEnumerable<(string Name, long ShardLength)> Units => _units.Select(u => (u.Name, u.ShardLength));
    /// <summary>(name, offset in the model's flat order, length, dims, trainable) in named_parameters order.</summary>
    public IEnumerable<(string Name, long Offset, long Length, int Dim, bool Trainable)> Items =>
        _items.Select(i => (i.Name, i.GlobalOffset, i.Length, i.Dim, i.Trainable));

    Tensor Run(string[] modules, Tensor x, Func<Tensor, Tensor> f)
    {
        if (_unsharded) return f(x);
        var units = modules.Select(m => _byName.TryGetValue(m, out var u) ? u
            : throw new InvalidOperationException($"no fully sharded unit '{m}' (units: {string.Join(", ", _byName.Keys)})")).Distinct().ToArray();
        if (!is_grad_enabled())
        {
            foreach (var u in units) Gather(u);
            try { return f(x); }
            finally { foreach (var u in units) Release(u); }
        }
        return UnitFn.apply([x, .. units.Select(u => u.Shard), new Call(this, units, f)]);
    }

    /// <summary>All-gathers a unit's shards into one buffer (compute dtype) and points its parameters into it.</summary>
    void Gather(Unit u)
    {
        using var _ = no_grad();
        var full = empty(u.Padded, device: Values.device);
        using (var mine = Values.narrow(0, u.ShardOffset, u.ShardLength)) _comm.AllGather(mine, full);
        if (ComputeDtype != ScalarType.Float32) { var cast = full.to(ComputeDtype); full.Dispose(); full = cast; }
        full.DetachFromDisposeScope();
        for (int i = 0; i < u.Parameters.Length; i++)
        {
            var (off, n, shape) = u.Places[i];
            using var flat = full.narrow(0, off, n);
            using var view = flat.view(shape);
            u.Parameters[i].set_(view);
        }
        u.Full = full;
    }

    /// <summary>Points a unit's parameters at an empty tensor and frees the gathered buffer.</summary>
    void Release(Unit u)
    {
        using var _ = no_grad();
        foreach (var p in u.Parameters) p.set_(_empty);
        u.Full?.Dispose();
        u.Full = null;
    }

    /// <summary>Before a step's first micro-batch: zero the gradient shards.</summary>
    public void ZeroGradients()
    {
        Gradients.zero_();
        foreach (var u in _units)   // autograd accumulates into a defined .grad in place; restore it should anything have replaced it
            if (u.Shard.grad is not { } g || LibTorchLoader.DataPtr(g) != LibTorchLoader.DataPtr(Gradients) + (nint)(u.ShardOffset * 4))
                u.Shard.grad = Gradients.narrow(0, u.ShardOffset, u.ShardLength);
    }

    /// <summary>
    /// After the backward passes: averages the reduce-scattered gradient sums over ranks and returns them (this rank's
    /// shard, long-lived) with the global gradient norm (one-element fp64, the caller's scope).
    /// </summary>
    public (Tensor GradShard, Tensor Norm) ReduceGradients()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        foreach (var u in _units)   // autograd replaced a gradient view instead of accumulating: fold it back
        {
            var g = u.Shard.grad;
            using var view = Gradients.narrow(0, u.ShardOffset, u.ShardLength);
            if (g is not null && LibTorchLoader.DataPtr(g) != LibTorchLoader.DataPtr(view)) { view.copy_(g); u.Shard.grad = view.alias(); }
        }
        if (_comm.WorldSize > 1)
            using (var world = ((double)_comm.WorldSize).ToScalar()) Gradients.div_(world);
        var sq = GradientNorm.SumOfSquares(Gradients);
        _comm.AllReduceSum(sq);
        return (Gradients, sq.sqrt().MoveToOuterDisposeScope());
    }

    /// <summary>This rank's part (as laid out in <see cref="Values"/>) of a vector over the model's flat order (length ≥ <see cref="Count"/>).</summary>
    public Tensor Take(Tensor global)
    {
        using var scope = NewDisposeScope();
        var mine = zeros(Values.numel(), dtype: global.dtype, device: Values.device);
        foreach (var u in _units)
        {
            var full = zeros(u.Padded, dtype: global.dtype, device: global.device);
            foreach (var item in _items.Where(i => i.Unit == u))
                full.narrow(0, u.Places[item.Index].Offset, item.Length).copy_(global.narrow(0, item.GlobalOffset, item.Length));
            mine.narrow(0, u.ShardOffset, u.ShardLength).copy_(full.narrow(0, _comm.Rank * u.ShardLength, u.ShardLength));
        }
        return mine.MoveToOuterDisposeScope();
    }

    /// <summary>Collective: every rank's parts of a vector laid out as <see cref="Values"/>, in the model's flat order [Count] (one unit gathered at a time).</summary>
    public Tensor GatherFlat(Tensor mine)
    {
        using var scope = NewDisposeScope();
        var global = empty(Count, dtype: mine.dtype, device: mine.device);
        foreach (var u in _units)
        {
            var full = empty(u.Padded, dtype: mine.dtype, device: mine.device);
            _comm.AllGather(mine.narrow(0, u.ShardOffset, u.ShardLength), full);
            foreach (var item in _items.Where(i => i.Unit == u))
                global.narrow(0, item.GlobalOffset, item.Length).copy_(full.narrow(0, u.Places[item.Index].Offset, item.Length));
        }
        return global.MoveToOuterDisposeScope();
    }

    /// <summary>Collective: the full fp32 parameters by name (for checkpoints; one copy of the model on every rank while they live).</summary>
    public IReadOnlyDictionary<string, Tensor> GatherParameters()
    {
        using var _ = no_grad();
        var flat = GatherFlat(Values);
        return _items.ToDictionary(i => i.Name, i => flat.narrow(0, i.GlobalOffset, i.Length).view(i.Unit.Places[i.Index].Shape));
    }

    /// <summary>
    /// Collective: gathers every unit into the model's parameters until disposed, so the model runs whole on one rank
    /// (evaluation, samples); <see cref="CausalLM.RunUnit"/> then just runs.
    /// </summary>
    public IDisposable Unshard()
    {
        foreach (var u in _units) Gather(u);
        _unsharded = true;
        return new Reshard(this);
    }

    sealed class Reshard(FullyShard owner) : IDisposable
    {
        public void Dispose()
        {
            owner._unsharded = false;
            foreach (var u in owner._units) owner.Release(u);
        }
    }

    /// <summary>The model's current parameter tensors (empty between units when sharded), for memory measurement.</summary>
    public IEnumerable<Tensor> ModelParameters => _units.SelectMany(u => u.Parameters);

    public void Dispose()
    {
        _model.RunUnit = static (_, x, f) => f(x);
        foreach (var u in _units) { u.Full?.Dispose(); u.Shard.Dispose(); }
        Values.Dispose();
        Gradients.Dispose();
        _empty.Dispose();
    }

    sealed record Call(FullyShard Owner, Unit[] Units, Func<Tensor, Tensor> F);

    /// <summary>One unit: inputs (x, the units' shards…, call); gathers for forward, gathers and recomputes for backward.</summary>
    sealed class UnitFn : SingleTensorFunction<UnitFn>
    {
        public override string Name => "FullyShardedUnit";

        public override Tensor forward(AutogradContext ctx, params object[] vars)
        {
            var x = (Tensor)vars[0];
            var call = (Call)vars[^1];
            ctx.save_for_backward([x]);
            ctx.save_data("call", call);
            foreach (var u in call.Units) call.Owner.Gather(u);
            try { return call.F(x); }                     // TorchSharp runs a function's forward without recording a graph
            finally { foreach (var u in call.Units) call.Owner.Release(u); }
        }

        public override List<Tensor> backward(AutogradContext ctx, Tensor grad)
        {
            var x = ctx.get_saved_variables()[0];
            var call = (Call)ctx.get_data("call");
            var owner = call.Owner;
            using var scope = NewDisposeScope();
            Tensor? gx = null;
            var shardGrads = new List<Tensor>();
            foreach (var u in call.Units) owner.Gather(u);
            try
            {
                var trainable = call.Units.SelectMany(u => u.Parameters.Select((p, i) => (u, i, p))).Where(t => t.p.requires_grad).ToList();
                IList<Tensor> grads;
                bool inputGrad = x.is_floating_point() && x.requires_grad;
                using (enable_grad())
                {
                    var xin = inputGrad ? x.detach().requires_grad_(true) : x;
                    var y = call.F(xin);                  // the unit's forward again, now with a graph
                    List<Tensor> inputs = [.. inputGrad ? [xin] : Array.Empty<Tensor>(), .. trainable.Select(t => (Tensor)t.p)];
                    grads = torch.autograd.grad([y], inputs, [grad], allow_unused: true);
                }
                if (inputGrad) gx = grads[0];
                int k = inputGrad ? 1 : 0;
                var fulls = call.Units.ToDictionary(u => u, u => zeros(u.Padded, device: owner.Values.device));
                foreach (var (u, i, _) in trainable)
                {
                    var g = grads[k++];
                    if (g is null || g.IsInvalid) continue;
                    fulls[u].narrow(0, u.Places[i].Offset, u.Places[i].Length).copy_(g.reshape(-1));   // bf16 → fp32 here
                }
                foreach (var u in call.Units)
                {
                    var shard = empty(u.ShardLength, device: owner.Values.device);
                    owner._comm.ReduceScatterSum(fulls[u], shard);
                    shardGrads.Add(shard);
                }
            }
            finally { foreach (var u in call.Units) owner.Release(u); }
            return [gx?.MoveToOuterDisposeScope()!, .. shardGrads.Select(s => s.MoveToOuterDisposeScope()), null!];
        }
    }
}
