using System.Globalization;
using System.Text;

namespace Supercluster.Planning;

/// <summary>Hand-written SVG: one panel per series, stacked, sharing a logarithmic x axis (GPUs).</summary>
public static class SvgChart
{
    public sealed record Series(string Title, string Unit, string Colour, IReadOnlyList<(double X, double Y)> Points);

    const int Width = 720, PanelHeight = 190, Left = 80, Right = 30, Top = 40, Gap = 30;

    public static string Render(string title, string xLabel, IReadOnlyList<Series> panels)
    {
        static string F(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
        var all = panels.SelectMany(p => p.Points).Where(p => p.X > 0 && double.IsFinite(p.Y)).ToList();
        double xMin = all.Count > 0 ? all.Min(p => p.X) : 1, xMax = all.Count > 0 ? all.Max(p => p.X) : 10;
        if (xMax <= xMin) xMax = xMin * 10;
        double lx0 = Math.Log10(xMin), lx1 = Math.Log10(xMax);
        double plotW = Width - Left - Right;
        double X(double x) => Left + (Math.Log10(x) - lx0) / (lx1 - lx0) * plotW;
        int height = Top + panels.Count * (PanelHeight + Gap) + 30;

        var sb = new StringBuilder();
        sb.Append($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" viewBox=\"0 0 {Width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        sb.Append($"<rect width=\"{Width}\" height=\"{height}\" fill=\"white\"/>\n");
        sb.Append($"<text x=\"{Width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        for (int i = 0; i < panels.Count; i++)
        {
            var s = panels[i];
            double y0 = Top + i * (PanelHeight + Gap), y1 = y0 + PanelHeight - 20;
            var pts = s.Points.Where(p => p.X > 0 && double.IsFinite(p.Y)).ToList();
            double yMax = pts.Count > 0 ? pts.Max(p => p.Y) : 1;
            if (yMax <= 0) yMax = 1;
            yMax *= 1.1;
            double Y(double y) => y1 - y / yMax * (y1 - y0);
            sb.Append($"<text x=\"{Left}\" y=\"{F(y0 - 6)}\" font-weight=\"bold\">{Escape(s.Title)} ({Escape(s.Unit)})</text>\n");
            sb.Append($"<line x1=\"{Left}\" y1=\"{F(y1)}\" x2=\"{Width - Right}\" y2=\"{F(y1)}\" stroke=\"black\"/>\n");
            sb.Append($"<line x1=\"{Left}\" y1=\"{F(y0)}\" x2=\"{Left}\" y2=\"{F(y1)}\" stroke=\"black\"/>\n");
            for (int t = 0; t <= 4; t++)
            {
                double v = yMax * t / 4, y = Y(v);
                sb.Append($"<line x1=\"{Left}\" y1=\"{F(y)}\" x2=\"{Width - Right}\" y2=\"{F(y)}\" stroke=\"#ddd\"/>\n");
                sb.Append($"<text x=\"{Left - 6}\" y=\"{F(y + 4)}\" text-anchor=\"end\">{Escape(Tick(v))}</text>\n");
            }
            for (double d = Math.Pow(10, Math.Floor(lx0)); d <= xMax * 1.0001; d *= 10)
                if (d >= xMin / 1.0001)
                    sb.Append($"<text x=\"{F(X(d))}\" y=\"{F(y1 + 15)}\" text-anchor=\"middle\">{Escape(Tick(d))}</text>\n");
            if (pts.Count > 0)
            {
                sb.Append($"<polyline fill=\"none\" stroke=\"{s.Colour}\" stroke-width=\"2\" points=\"{string.Join(" ", pts.Select(p => $"{F(X(p.X))},{F(Y(p.Y))}"))}\"/>\n");
                foreach (var p in pts)
                    sb.Append($"<circle cx=\"{F(X(p.X))}\" cy=\"{F(Y(p.Y))}\" r=\"3\" fill=\"{s.Colour}\"><title>{Escape($"{p.X:N0}: {p.Y:G4}")}</title></circle>\n");
            }
        }
        sb.Append($"<text x=\"{Left + plotW / 2}\" y=\"{height - 8}\" text-anchor=\"middle\">{Escape(xLabel)}</text>\n");
        sb.Append("</svg>\n");
        return sb.ToString();
    }

    static string Tick(double v) => v >= 1e6 ? $"{v / 1e6:0.#}M" : v >= 1e3 ? $"{v / 1e3:0.#}k" : v.ToString(v >= 10 ? "0" : "0.##", CultureInfo.InvariantCulture);

    static string Escape(string s) => s.Replace("&", "&amp;").Replace("<", "&lt;").Replace(">", "&gt;").Replace("\"", "&quot;");
}
