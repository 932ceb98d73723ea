using System.Reflection;

namespace Supercluster.Training;

/// <summary>
/// The command-line flag of an options-record property: its name and help text. The record's initialiser is the
/// flag's default, so the CLI is derived from the record (one source for each flag, its type and its default).
/// </summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class FlagAttribute(string name, string description) : Attribute
{
    public string Name { get; } = name;
    public string Description { get; } = description;

    /// <summary>The flagged properties of <typeparamref name="T"/> in declaration order.</summary>
    public static IReadOnlyList<(PropertyInfo Property, FlagAttribute Flag)> Of<T>() =>
        typeof(T).GetProperties().Select(p => (p, p.GetCustomAttribute<FlagAttribute>())).Where(x => x.Item2 is not null)
            .OrderBy(x => x.p.MetadataToken).Select(x => (x.p, x.Item2!)).ToList();
}
