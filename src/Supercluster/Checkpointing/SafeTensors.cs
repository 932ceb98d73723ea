using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace Supercluster.Checkpointing;

/// <summary>
/// The safetensors format (Hugging Face): u64 little-endian header length, a JSON header
/// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}, then raw little-endian tensor bytes.
/// Readable by the <c>safetensors</c> Python package and by transformers.
/// </summary>
public static class SafeTensors
{
    static readonly Dictionary<ScalarType, string> Names = new()
    {
        [ScalarType.Float32] = "F32", [ScalarType.Float64] = "F64", [ScalarType.BFloat16] = "BF16", [ScalarType.Float16] = "F16",
        [ScalarType.Int64] = "I64", [ScalarType.Int32] = "I32", [ScalarType.Int16] = "I16", [ScalarType.Int8] = "I8",
        [ScalarType.Byte] = "U8", [ScalarType.Bool] = "BOOL",
    };
    static readonly Dictionary<string, ScalarType> Types = Names.ToDictionary(kv => kv.Value, kv => kv.Key);

    /// <summary>Writes tensors (moved to CPU, contiguous) and string metadata to <paramref name="path"/>, flushed to disk.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.Select(t => (t.Name, Tensor: t.Tensor.detach().cpu().contiguous())).ToList();
        try
        {
            var header = new JsonObject();
            if (metadata is not null)
                header["__metadata__"] = new JsonObject(metadata.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value))));
            long offset = 0;
            foreach (var (name, t) in list)
            {
                if (!Names.TryGetValue(t.dtype, out var dt)) throw new NotSupportedException($"safetensors: dtype {t.dtype} of {name}");
                long bytes = t.NumberOfElements * t.ElementSize;
                header[name] = new JsonObject
                {
                    ["dtype"] = dt,
                    ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode?)JsonValue.Create(s)).ToArray()),
                    ["data_offsets"] = new JsonArray(offset, offset + bytes),
                };
                offset += bytes;
            }
            var json = Encoding.UTF8.GetBytes(header.ToJsonString());
            int pad = (8 - json.Length % 8) % 8; // spec allows trailing spaces; aligned data helps mmap readers
            using var f = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20);
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)(json.Length + pad));
            f.Write(len);
            f.Write(json);
            for (int i = 0; i < pad; i++) f.WriteByte((byte)' ');
            foreach (var (_, t) in list)
                if (t.NumberOfElements > 0) f.Write(t.bytes);
            f.Flush(flushToDisk: true);
        }
        finally
        {
            foreach (var (_, t) in list) t.Dispose();
        }
    }

    /// <summary>Reads every tensor (CPU) and the metadata; a malformed file gives a <see cref="BadInputException"/> naming it.</summary>
    /// <remarks>Streams tensor by tensor, so files larger than 2 GB (gpt2-large and up) load too.</remarks>
    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Read(string path)
    {
        if (!File.Exists(path)) throw new BadInputException($"{path}: file not found (expected a .safetensors file)");
        using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        long length = f.Length;
        Span<byte> len = stackalloc byte[8];
        if (length < 8 || f.Read(len) != 8) throw new BadInputException($"{path}: truncated safetensors file ({length} bytes)");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(len);
        if (n > (ulong)(length - 8) || n > int.MaxValue) throw new BadInputException($"{path}: safetensors header length {n} exceeds the file size {length}");
        var headerBytes = new byte[n];
        f.ReadExactly(headerBytes);
        JsonObject header;
        try { header = JsonNode.Parse(headerBytes)!.AsObject(); }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        { throw new BadInputException($"{path}: safetensors header is not a JSON object: {e.Message}"); }

        long dataStart = 8 + (long)n;
        var tensors = new Dictionary<string, Tensor>();
        var meta = new Dictionary<string, string>();
        try
        {
            foreach (var (name, node) in header)
            {
                if (name == "__metadata__")
                {
                    foreach (var (k, v) in node!.AsObject()) meta[k] = v?.GetValue<string>() ?? "";
                    continue;
                }
                var o = node!.AsObject();
                string dt = o["dtype"]!.GetValue<string>();
                if (!Types.TryGetValue(dt, out var type)) throw new BadInputException($"{path}: tensor {name} has unsupported dtype {dt}");
                long[] shape = o["shape"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
                var offs = o["data_offsets"]!.AsArray();
                long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
                var t = empty(shape, type);
                tensors[name] = t;
                long bytes = t.NumberOfElements * t.ElementSize;
                if (end - begin != bytes || dataStart + end > length || begin < 0)
                    throw new BadInputException($"{path}: tensor {name} data [{begin}, {end}) does not match shape [{string.Join(", ", shape)}] {dt} or the file size");
                if (bytes == 0) continue;
                f.Seek(dataStart + begin, SeekOrigin.Begin);
                f.ReadExactly(t.bytes);
            }
        }
        catch
        {
            foreach (var t in tensors.Values) t.Dispose();
            throw;
        }
        return (tensors, meta);
    }
}
