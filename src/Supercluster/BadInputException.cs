namespace Supercluster;

/// <summary>
/// Input the user can fix: a path, a field, a value. The CLI prints its message as one line and exits with code 2.
/// Messages name the file/field/value and what was expected.
/// </summary>
public sealed class BadInputException(string message) : Exception(message);
