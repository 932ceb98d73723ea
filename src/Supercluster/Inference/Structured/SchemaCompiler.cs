using System.Text.Encodings.Web;
using System.Text.Json;

namespace Supercluster.Inference.Structured;

/// <summary>A schema the constrained decoder cannot follow; <see cref="Path"/> names where (e.g. "properties.age.minimum").</summary>
public sealed class SchemaException(string message, string path) : Exception(message)
{
    public string Path { get; } = path;
}

/// <summary>
/// Compiles the JSON Schema subset that structured outputs use into a <see cref="GrammarNode"/>: object
/// (properties, required, additionalProperties), array (items, minItems, maxItems), string (minLength, maxLength),
/// number, integer, boolean, null, type lists, enum, const, anyOf, nesting. Annotations (title, description,
/// default, examples, $schema) are ignored; every other keyword is refused by name rather than silently not enforced.
/// </summary>
public static class SchemaCompiler
{
    static readonly HashSet<string> Annotations = ["title", "description", "default", "examples", "$schema", "$id", "$comment", "strict"];
    static readonly HashSet<string> Supported = ["type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "minLength", "maxLength", "enum", "const", "anyOf"];
    const int MaxNesting = 32;

    static readonly JsonSerializerOptions Compact = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>The JSON text a value is written as (enum and const members, keys): compact, UTF-8 kept.</summary>
    public static byte[] Serialize(JsonElement e) => JsonSerializer.SerializeToUtf8Bytes(e, Compact);

    public static GrammarNode Compile(JsonElement schema) => Node(schema, "", 0);

    static SchemaException Bad(string path, string message) => new($"{message} at '{(path.Length == 0 ? "(root)" : path)}'", path);

    static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

    static GrammarNode Node(JsonElement s, string path, int depth)
    {
        if (depth > MaxNesting) throw Bad(path, $"the schema nests deeper than {MaxNesting} levels");
        if (s.ValueKind == JsonValueKind.True) return AnyNode.Instance;
        if (s.ValueKind != JsonValueKind.Object) throw Bad(path, "a schema must be an object");
        foreach (var p in s.EnumerateObject())
            if (!Supported.Contains(p.Name) && !Annotations.Contains(p.Name))
                throw Bad(Join(path, p.Name), $"unsupported JSON schema keyword '{p.Name}' (supported: {string.Join(", ", Supported)})");

        if (s.TryGetProperty("const", out var c)) return new LiteralNode([Serialize(c)]);
        if (s.TryGetProperty("enum", out var en))
        {
            if (en.ValueKind != JsonValueKind.Array || en.GetArrayLength() == 0) throw Bad(Join(path, "enum"), "'enum' must be a non-empty array");
            return new LiteralNode(en.EnumerateArray().Select(Serialize));
        }
        if (s.TryGetProperty("anyOf", out var any))
        {
            if (any.ValueKind != JsonValueKind.Array || any.GetArrayLength() == 0) throw Bad(Join(path, "anyOf"), "'anyOf' must be a non-empty array of schemas");
            return Union(any.EnumerateArray().Select((a, i) => Node(a, $"{Join(path, "anyOf")}[{i}]", depth + 1)).ToList());
        }
        if (!s.TryGetProperty("type", out var type))
        {
            if (s.TryGetProperty("properties", out _)) return Typed("object", s, path, depth);
            if (s.TryGetProperty("items", out _)) return Typed("array", s, path, depth);
            return AnyNode.Instance;
        }
        if (type.ValueKind == JsonValueKind.String) return Typed(type.GetString()!, s, path, depth);
        if (type.ValueKind != JsonValueKind.Array || type.GetArrayLength() == 0 || type.EnumerateArray().Any(t => t.ValueKind != JsonValueKind.String))
            throw Bad(Join(path, "type"), "'type' must be a type name or an array of type names");
        var names = type.EnumerateArray().Select(t => t.GetString()!).Distinct().ToList();
        if (names.Contains("number")) names.Remove("integer");   // number covers integer
        return Union(names.Select(n => Typed(n, s, path, depth)).ToList());
    }

    static GrammarNode Union(List<GrammarNode> nodes) => nodes.Count == 1 ? nodes[0] : new UnionNode(nodes);

    static GrammarNode Typed(string type, JsonElement s, string path, int depth)
    {
        switch (type)
        {
            case "string":
                int min = Count(s, "minLength", path, 0), max = Count(s, "maxLength", path, int.MaxValue);
                if (min > max) throw Bad(Join(path, "minLength"), $"minLength {min} is over maxLength {max}");
                return new StringNode(min, max);
            case "number": return new NumberNode(false);
            case "integer": return new NumberNode(true);
            case "boolean": return new LiteralNode("true", "false");
            case "null": return new LiteralNode("null");
            case "array":
                var items = s.TryGetProperty("items", out var it) ? Node(it, Join(path, "items"), depth + 1) : AnyNode.Instance;
                int lo = Count(s, "minItems", path, 0), hi = Count(s, "maxItems", path, int.MaxValue);
                if (lo > hi) throw Bad(Join(path, "minItems"), $"minItems {lo} is over maxItems {hi}");
                return new ArrayNode(items, lo, hi);
            case "object":
                return Object(s, path, depth);
            default:
                throw Bad(Join(path, "type"), $"unknown type '{type}' (expected object, array, string, number, integer, boolean or null)");
        }
    }

    static GrammarNode Object(JsonElement s, string path, int depth)
    {
        bool closed = false;
        if (s.TryGetProperty("additionalProperties", out var ap))
        {
            if (ap.ValueKind == JsonValueKind.False) closed = true;
            else if (ap.ValueKind != JsonValueKind.True)
                throw Bad(Join(path, "additionalProperties"), "unsupported 'additionalProperties' schema (only true or false)");
        }
        var required = new HashSet<string>();
        if (s.TryGetProperty("required", out var req))
        {
            if (req.ValueKind != JsonValueKind.Array || req.EnumerateArray().Any(r => r.ValueKind != JsonValueKind.String))
                throw Bad(Join(path, "required"), "'required' must be an array of property names");
            foreach (var r in req.EnumerateArray()) required.Add(r.GetString()!);
        }
        if (!s.TryGetProperty("properties", out var props))
        {
            if (required.Count > 0) throw Bad(Join(path, "required"), $"required property '{required.First()}' is not in 'properties'");
            // No properties: any object, or only {} when closed.
            return closed ? new ObjectNode([]) : FreeObjectNode.Instance;
        }
        if (props.ValueKind != JsonValueKind.Object) throw Bad(Join(path, "properties"), "'properties' must be an object");
        var list = new List<Property>();
        foreach (var p in props.EnumerateObject())
            list.Add(new Property(p.Name, JsonSerializer.SerializeToUtf8Bytes(p.Name, Compact), Node(p.Value, Join(Join(path, "properties"), p.Name), depth + 1), required.Contains(p.Name)));
        foreach (var r in required)
            if (!list.Any(p => p.Name == r)) throw Bad(Join(path, "required"), $"required property '{r}' is not in 'properties'");
        // Without additionalProperties: false, extra properties are allowed but never needed: write the declared ones.
        return new ObjectNode(list);
    }

    static int Count(JsonElement s, string name, string path, int absent)
    {
        if (!s.TryGetProperty(name, out var v)) return absent;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt32(out var n) || n < 0)
            throw Bad(Join(path, name), $"'{name}' must be a non-negative integer");
        return n;
    }
}
