using System.Net;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server.Security;

/// <summary>
/// Which browsers' requests are this server's own. <b>Host</b>: an IP literal or localhost always (DNS rebinding needs
/// a name), other names only when listed in <see cref="ServerOptions.AllowedHosts"/>. <b>Origin</b> (sent by browsers
/// on cross-site and on non-GET requests): the page must come from this server (same scheme-less authority as the Host
/// header) or from <see cref="ServerOptions.AllowedOrigins"/>. Anything else is 403 before any endpoint runs.
/// </summary>
public sealed class OriginPolicy(ServerOptions o)
{
    readonly HashSet<string> _hosts = o.AllowedHosts.Select(h => h.Trim().ToLowerInvariant()).ToHashSet();
    readonly HashSet<string> _origins = o.AllowedOrigins.Select(x => x.Trim().TrimEnd('/').ToLowerInvariant()).ToHashSet();

    public void Check(HttpRequest request)
    {
        var host = request.Host.Host;   // without the port; empty for HTTP/1.0 clients that send none
        if (host.Length > 0 && !HostAllowed(host))
            throw new ApiException(403, $"host '{Clip(host)}' is not served here (allow it with --allowed-hosts)", code: "host_not_allowed");
        var origin = request.Headers.Origin.ToString();
        if (origin.Length == 0) return;
        if (_origins.Contains("*") || _origins.Contains(origin.TrimEnd('/').ToLowerInvariant())) return;
        if (Uri.TryCreate(origin, UriKind.Absolute, out var u) && (u.Scheme is "http" or "https")
            && string.Equals(u.Authority, request.Host.Value, StringComparison.OrdinalIgnoreCase)
            && HostAllowed(u.Host))
            return;
        throw new ApiException(403, $"cross-origin request from '{Clip(origin)}' refused (allow it with --allowed-origins)", code: "origin_not_allowed");
    }

    bool HostAllowed(string host) =>
        IPAddress.TryParse(host.Trim('[', ']'), out _) || host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || _hosts.Contains("*") || _hosts.Contains(host.ToLowerInvariant());

    static string Clip(string s) => s.Length > 100 ? s[..100] + "…" : s;
}
