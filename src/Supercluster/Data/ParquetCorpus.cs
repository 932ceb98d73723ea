using Parquet;
using Parquet.Schema;

namespace Supercluster.Data;

/// <summary>Documents from a Parquet file: one per row, read one row group at a time (row groups bound the memory).</summary>
public static class ParquetCorpus
{
    /// <summary>Rows of <paramref name="path"/> whose <paramref name="textField"/> is not null; other scalar columns become metadata.</summary>
    public static IEnumerable<Document> Read(string path, string textField)
    {
        Stream stream;
        try { stream = File.OpenRead(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new BadInputException($"input {path} cannot be read ({e.Message})");
        }
        using (stream)
        {
            ParquetReader reader;
            try { reader = ParquetReader.CreateAsync(stream).GetAwaiter().GetResult(); }
            catch (Exception e) when (e is not BadInputException)
            {
                throw new BadInputException($"input {path} is not a readable parquet file ({e.Message})");
            }
            try
            {
                var fields = reader.Schema.GetDataFields();
                var text = fields.FirstOrDefault(f => f.Path.ToString() == textField) ?? fields.FirstOrDefault(f => f.Name == textField)
                    ?? throw new BadInputException($"{path}: no text column '{textField}' (columns: {string.Join(", ", fields.Select(f => f.Path.ToString()).Take(10))}); pass --text-field");
                if (!IsText(text.ClrType) || text.IsArray)
                    throw new BadInputException($"{path}: column '{textField}' holds {text.ClrType.Name}, expected strings");
                var metaFields = fields.Where(f => f != text && !f.IsArray && IsScalar(f.ClrType)).ToArray();
                for (int g = 0; g < reader.RowGroupCount; g++)
                {
                    using var group = reader.OpenRowGroupReader(g);
                    int rows = checked((int)group.RowCount);
                    var texts = new string?[rows];
                    group.ReadAsync(text, texts.AsMemory()).GetAwaiter().GetResult();
                    var meta = metaFields.Select(f => (f.Name, Values: ReadColumn(group, f, rows))).ToArray();
                    for (int r = 0; r < rows; r++)
                    {
                        if (texts[r] is null) continue;
                        Dictionary<string, string>? m = null;
                        foreach (var (name, values) in meta)
                            if (values[r] is { } v) (m ??= new())[name] = v;
                        yield return new Document(texts[r]!, m);
                    }
                }
            }
            finally
            {
                reader.DisposeAsync().AsTask().GetAwaiter().GetResult(); // only async disposal is offered
            }
        }
    }

    /// <summary>Parquet.Net 6 reports UTF-8 columns as ReadOnlyMemory rather than string; both read as strings.</summary>
    static bool IsText(Type t) => t == typeof(string) || t == typeof(ReadOnlyMemory<char>) || t == typeof(ReadOnlyMemory<byte>);

    static bool IsScalar(Type t) => IsText(t) || t == typeof(int) || t == typeof(long) || t == typeof(short)
        || t == typeof(double) || t == typeof(float) || t == typeof(bool);

    static string?[] ReadColumn(ParquetRowGroupReader group, DataField field, int rows)
    {
        if (IsText(field.ClrType))
        {
            var s = new string?[rows];
            group.ReadAsync(field, s.AsMemory()).GetAwaiter().GetResult();
            return s;
        }
        return field.ClrType switch
        {
            var t when t == typeof(int) => Numbers<int>(group, field, rows),
            var t when t == typeof(long) => Numbers<long>(group, field, rows),
            var t when t == typeof(short) => Numbers<short>(group, field, rows),
            var t when t == typeof(double) => Numbers<double>(group, field, rows),
            var t when t == typeof(float) => Numbers<float>(group, field, rows),
            var t when t == typeof(bool) => Numbers<bool>(group, field, rows),
            _ => new string?[rows],
        };
    }

    static string?[] Numbers<T>(ParquetRowGroupReader group, DataField field, int rows) where T : struct
    {
        var values = new T?[rows];
        group.ReadAsync(field, values.AsMemory()).GetAwaiter().GetResult();
        return values.Select(v => v is { } x ? Convert.ToString(x, System.Globalization.CultureInfo.InvariantCulture) : null).ToArray();
    }
}
