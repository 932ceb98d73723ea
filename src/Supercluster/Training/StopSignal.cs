using System.Runtime.InteropServices;
using Supercluster.Distributed;
using static TorchSharp.torch;

namespace Supercluster.Training;

/// <summary>
/// Graceful stop on SIGTERM (preemption: Slurm, Kubernetes, spot instances) and SIGINT (Ctrl+C): the first signal
/// lets the current step finish, the trainer writes a checkpoint and exits 0; a second signal stops at once (the
/// default action). Ranks agree on the step to stop at with one all-reduce of the flag per step, since each rank
/// may see the signal at a different step.
/// </summary>
public sealed class StopSignal : IDisposable
{
    static int _delivered;                     // signals received by this process, for the self-signalling fault drill
    readonly PosixSignalRegistration[] _registrations;
    readonly TextWriter _log;
    int _count;
    PosixSignal? _first;

    StopSignal(TextWriter log)
    {
        _log = log;
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle), PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle)];
    }

    /// <summary>Starts listening for SIGTERM and SIGINT; disposing restores the default actions.</summary>
    public static StopSignal Listen(TextWriter log) => new(log);

    /// <summary>Signals this process has received so far (any instance).</summary>
    public static int Delivered => Volatile.Read(ref _delivered);

    public bool Requested => Volatile.Read(ref _count) > 0;

    public string SignalName => _first is { } s ? Name(s) : "signal";

    void Handle(PosixSignalContext context)
    {
        Interlocked.Increment(ref _delivered);
        if (Interlocked.Increment(ref _count) == 1)
        {
            _first = context.Signal;
            context.Cancel = true;   // keep running until the step ends
            lock (_log)
            {
                _log.WriteLine($"{Name(context.Signal)} received: finishing this step, writing a checkpoint, then exiting (send it again to stop at once)");
                _log.Flush();
            }
        }
        else context.Cancel = false; // second signal: the default action, the process ends now
    }

    /// <summary>
    /// Whether to stop after the step that just ended. Collective when there are several ranks (all of them call it
    /// every step): one rank's signal stops all of them at the same step.
    /// </summary>
    public bool ShouldStop(ICommunicator comm, Device device)
    {
        if (comm.WorldSize == 1) return Requested;
        using var flag = tensor(new[] { Requested ? 1.0f : 0.0f }, device: device);
        comm.AllReduceSum(flag);
        return flag.cpu().item<float>() > 0;
    }

    /// <summary>The line the trainer prints when it stops early.</summary>
    public string Describe(long step, long steps, string? checkpoint) =>
        $"stopped by {SignalName} after step {step} of {steps}; checkpoint {checkpoint}; continue with --resume auto";

    static string Name(PosixSignal s) => s switch { PosixSignal.SIGTERM => "SIGTERM", PosixSignal.SIGINT => "SIGINT", _ => s.ToString() };

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
    }
}
