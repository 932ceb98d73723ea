using Supercluster.Cli;

// Thin CLI: each verb lives in Commands/<Verb>Command.cs and calls into the Supercluster library.
return CliRunner.Run(Verbs.Root(args), args);
