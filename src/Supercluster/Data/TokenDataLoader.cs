namespace Supercluster.Data;

/// <summary>Where a <see cref="TokenDataLoader"/> is: epoch, index into that epoch's shard order, token offset in the shard.</summary>
public sealed record DataLoaderState(int Epoch, int ShardIndex, long Position);

/// <summary>
/// llm.c-style batches from memory-mapped shards. A global batch is <c>batchSize·worldSize</c> contiguous rows of
/// <c>seqLen+1</c>-token windows (overlapping by one token) starting at <see cref="DataLoaderState.Position"/>;
/// rank r takes rows r·B … (r+1)·B−1, so one rank with batch 2B sees exactly the rows of two ranks with batch B.
/// A batch never crosses a shard: when the next global batch does not fit, the loader moves to the next shard.
/// Shard order: epoch 0 uses meta.json's (sorted) order; each later epoch uses a permutation derived only from
/// (seed, epoch), so every rank and every resumed run agrees on it. Shards too small for one global batch are skipped.
/// </summary>
public sealed class TokenDataLoader : IDisposable
{
    readonly ShardReader[] _shards;
    readonly LossMask.Reader[]? _masks;   // parallel to _shards when the data has loss masks (prepare --format chat)
    readonly int _batch, _seq, _rank, _world;
    readonly long _seed;
    readonly int[] _buffer;
    int[] _order;
    int _epoch, _shardIndex;
    long _position;

    public TokenDataLoader(string dataDir, string split, int batchSize, int seqLen, int rank = 0, int worldSize = 1, long seed = 0)
    {
        if (batchSize < 1 || seqLen < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), "batch size and sequence length must be positive");
        if (worldSize < 1 || rank < 0 || rank >= worldSize) throw new ArgumentOutOfRangeException(nameof(rank), $"rank {rank} is not in 0..{worldSize - 1}");
        Meta = DatasetMeta.Load(dataDir);
        var infos = Meta.Shards(split);
        if (infos.Count == 0) throw new BadInputException($"{dataDir} has no {split} shards");
        (_batch, _seq, _rank, _world, _seed) = (batchSize, seqLen, rank, worldSize, seed);
        long needed = (long)batchSize * seqLen * worldSize + 1;
        var usable = new List<ShardReader>();
        foreach (var info in infos)
        {
            var reader = ShardReader.Open(Path.Combine(dataDir, info.File));
            if (reader.TokenCount != info.Tokens)
            {
                reader.Dispose();
                throw new BadInputException($"shard {reader.FilePath} holds {reader.TokenCount:N0} tokens by its header and size, but {DatasetMeta.FileName} says {info.Tokens:N0}; the folder is inconsistent, re-run prepare");
            }
            TokensPerEpoch += reader.TokenCount;
            if (reader.TokenCount >= needed) usable.Add(reader);
            else reader.Dispose();
        }
        if (usable.Count == 0)
            throw new BadInputException($"the {split} split of {dataDir} is too small: its largest shard has {infos.Max(s => s.Tokens):N0} of {TokensPerEpoch:N0} tokens, " +
                $"one batch needs batch·seq·world+1 = {batchSize}·{seqLen}·{worldSize}+1 = {needed:N0}; lower the batch size or sequence length");
        _shards = [.. usable];
        if (Meta.Chat is not null)
            _masks = _shards.Select(s => LossMask.Reader.Open(LossMask.FileFor(s.FilePath), s.TokenCount)).ToArray();
        _buffer = new int[batchSize * seqLen + 1];
        _order = Order(0);
    }

    public DatasetMeta Meta { get; }

    /// <summary>Tokens in this split (all its shards).</summary>
    public long TokensPerEpoch { get; }

    /// <summary>Position of the next batch.</summary>
    public DataLoaderState State => new(_epoch, _shardIndex, _position);

    /// <summary>The data has a loss mask per token (<see cref="NextBatch(long[], long[], byte[])"/>).</summary>
    public bool HasLossMask => _masks is not null;

    /// <summary>
    /// <see cref="NextBatch(long[], long[])"/> and each target's loss mask (1 = trained), from the mask stream beside the
    /// shards; all ones when the data has none.
    /// </summary>
    public void NextBatch(long[] inputs, long[] targets, byte[] trained)
    {
        if (trained.Length != inputs.Length) throw new ArgumentException("the mask must hold batchSize·seqLen entries");
        int shard = _order[_shardIndex];
        long start = _position + (long)_rank * _batch * _seq + 1;   // targets are the window's tokens 1..T
        NextBatch(inputs, targets);
        if (_masks is null) Array.Fill(trained, (byte)1);
        else _masks[shard].Read(start, trained, 0, trained.Length);
    }

    /// <summary>Fills this rank's rows of the next global batch: inputs = window[:-1], targets = window[1:], row-major [B, T].</summary>
    public void NextBatch(long[] inputs, long[] targets)
    {
        int bt = _batch * _seq;
        if (inputs.Length != bt || targets.Length != bt)
            throw new ArgumentException($"inputs and targets must hold batchSize·seqLen = {bt} tokens");
        var shard = _shards[_order[_shardIndex]];
        long start = _position + (long)_rank * bt;
        shard.Read(start, _buffer);
        int vocab = Meta.VocabSize;
        for (int i = 0; i < _buffer.Length; i++)
            if ((uint)_buffer[i] >= (uint)vocab)
                throw new BadInputException($"shard {shard.FilePath} has token {(uint)_buffer[i]} at position {start + i}, expected ids below vocab size {vocab}");
        for (int i = 0; i < bt; i++)
        {
            inputs[i] = _buffer[i];
            targets[i] = _buffer[i + 1];
        }
        Advance();
    }

    void Advance()
    {
        long step = (long)_batch * _seq * _world;
        _position += step;
        if (_position + step + 1 <= _shards[_order[_shardIndex]].TokenCount) return;
        _position = 0;
        if (++_shardIndex < _shards.Length) return;
        _shardIndex = 0;
        _epoch++;
        _order = Order(_epoch);
    }

    /// <summary>Continues from a saved <see cref="State"/> (same data, batch shape and world size).</summary>
    public void Restore(DataLoaderState state)
    {
        if (state.Epoch < 0 || state.ShardIndex < 0 || state.ShardIndex >= _shards.Length || state.Position < 0
            || state.Position + (long)_batch * _seq * _world + 1 > _shards[Order(state.Epoch)[state.ShardIndex]].TokenCount)
            throw new BadInputException($"data loader state {state} does not fit this data ({_shards.Length} usable shards) and batch shape");
        _epoch = state.Epoch;
        _shardIndex = state.ShardIndex;
        _position = state.Position;
        _order = Order(_epoch);
    }

    /// <summary>Back to the first batch of epoch 0 (validation re-reads the same batches each time).</summary>
    public void Reset() => Restore(new DataLoaderState(0, 0, 0));

    /// <summary>Shard order of an epoch: identity for 0, else a Fisher–Yates shuffle driven by SplitMix64(seed, epoch).</summary>
    int[] Order(int epoch)
    {
        var order = Enumerable.Range(0, _shards.Length).ToArray();
        if (epoch == 0) return order;
        ulong state = unchecked((ulong)_seed * 0x9E3779B97F4A7C15UL ^ (ulong)epoch * 0xD1B54A32D192ED03UL);
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = (int)(Next(ref state) % (ulong)(i + 1));
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;

        static ulong Next(ref ulong s)
        {
            ulong z = unchecked(s += 0x9E3779B97F4A7C15UL);
            z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
            z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
            return z ^ (z >> 31);
        }
    }

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
        foreach (var m in _masks ?? []) m.Dispose();
    }
}
