using System.Buffers;
using System.Collections.Concurrent;
using System.Net;
using System.Text;
using Microsoft.AspNetCore.Connections;
using Supercluster.Server.OpenAi;

namespace Supercluster.Server.Security;

/// <summary>
/// At most N open connections per client IP address (Kestrel limits only the total). A connection over the limit gets
/// an OpenAI-shaped 429 with Retry-After and is closed, so a hundred half-sent requests from one address cannot take
/// every connection (in-flight slots are taken only once a body has arrived; see the guard).
/// </summary>
public sealed class ClientConnectionLimit(int perClient)
{
    readonly ConcurrentDictionary<IPAddress, int> _open = new();

    public int OpenFrom(IPAddress ip) => _open.TryGetValue(ip, out var n) ? n : 0;

    public ConnectionDelegate Middleware(ConnectionDelegate next) => async conn =>
    {
        if (perClient <= 0 || conn.RemoteEndPoint is not IPEndPoint ep) { await next(conn); return; }
        var ip = ep.Address.IsIPv4MappedToIPv6 ? ep.Address.MapToIPv4() : ep.Address;
        int n = _open.AddOrUpdate(ip, 1, (_, c) => c + 1);
        try
        {
            if (n <= perClient) await next(conn);
            else await Refuse(conn, n - 1);
        }
        finally
        {
            // Remove the entry when it drops to zero, so the table does not grow with every address ever seen.
            if (_open.AddOrUpdate(ip, 0, (_, c) => c - 1) <= 0) _open.TryRemove(KeyValuePair.Create(ip, 0));
        }
    };

    async Task Refuse(ConnectionContext conn, int open)
    {
        // Read the request head first (briefly): closing with unread input makes the client see a reset, not the 429.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(1));
        try
        {
            long seen = 0;
            while (seen < 16 * 1024)
            {
                var r = await conn.Transport.Input.ReadAsync(timeout.Token);
                seen = r.Buffer.Length;
                bool head = Encoding.ASCII.GetString(r.Buffer.ToArray()).Contains("\r\n\r\n");
                conn.Transport.Input.AdvanceTo(r.Buffer.Start, r.Buffer.End);
                if (head || r.IsCompleted) break;
            }
        }
        catch (OperationCanceledException) { }
        var body = new ApiException(429, $"too many connections from this address ({open} open, limit {perClient}); retry later", "requests", code: "rate_limit_exceeded").ToJson().ToJsonString();
        var response = $"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: {Encoding.UTF8.GetByteCount(body)}\r\n\r\n{body}";
        try
        {
            await conn.Transport.Output.WriteAsync(Encoding.UTF8.GetBytes(response));
            await conn.Transport.Output.CompleteAsync();
        }
        catch (Exception) { /* the client is gone */ }
    }
}
