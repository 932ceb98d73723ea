namespace Supercluster.Data;

/// <summary>One document of a corpus; <paramref name="Metadata"/> keeps the row's other scalar fields (year, name, …) as text.</summary>
public sealed record Document(string Text, IReadOnlyDictionary<string, string>? Metadata = null);
