using System.CommandLine;
using System.Reflection;
using Supercluster.Training;

namespace Supercluster.Cli.Commands;

/// <summary>
/// Command-line options derived from an options record: one option per <see cref="FlagAttribute"/> property, of the
/// property's type, with the record's initial value as its default (nullable properties have none: null = unset) and
/// required where the property is <c>required</c>. Reading a parse result gives the record back.
/// </summary>
public sealed class RecordOptions<T> where T : class
{
    readonly List<(Option Option, Action<ParseResult, T> Bind)> _bindings = [];

    /// <param name="defaults">A record holding the defaults (required members set to anything).</param>
    public RecordOptions(T defaults)
    {
        var make = typeof(RecordOptions<T>).GetMethod(nameof(Make), BindingFlags.NonPublic | BindingFlags.Static)!;
        foreach (var (p, flag) in FlagAttribute.Of<T>())
        {
            bool required = p.GetCustomAttribute<System.Runtime.CompilerServices.RequiredMemberAttribute>() is not null;
            _bindings.Add(((Option, Action<ParseResult, T>))make.MakeGenericMethod(p.PropertyType).Invoke(null, [p, flag, p.GetValue(defaults), required])!);
        }
    }

    public IEnumerable<Option> Options => _bindings.Select(b => b.Option);

    /// <summary>The option for <paramref name="flag"/> (e.g. to read it before the record is built).</summary>
    public Option this[string flag] => _bindings.First(b => b.Option.Name == flag).Option;

    /// <summary>The record the command line describes: <paramref name="seed"/> with every flagged property set from the parse.</summary>
    public T Read(ParseResult parse, T seed)
    {
        // A copy through the record's clone, so the seed is untouched; init-only setters are callable by reflection.
        var copy = (T)typeof(T).GetMethod("<Clone>$")!.Invoke(seed, null)!;
        foreach (var (_, bind) in _bindings) bind(parse, copy);
        return copy;
    }

    static (Option, Action<ParseResult, T>) Make<TValue>(PropertyInfo p, FlagAttribute flag, object? defaultValue, bool required)
    {
        var o = new Option<TValue>(flag.Name) { Description = flag.Description, Required = required };
        if (!required && defaultValue is TValue d) o.DefaultValueFactory = _ => d;
        return (o, (parse, target) => p.SetValue(target, parse.GetValue(o)));
    }
}
