using System.Text.Json.Nodes;
using Microsoft.Playwright;
using Xunit.Abstractions;

namespace Supercluster.Tests.Serving;

/// <summary>
/// A real headless Chromium (Debian's /usr/bin/chromium, installed by scripts/setup.sh; never downloaded) opens the
/// dashboard, sees the loss chart with points (and a new point appear live), the task accuracy chart appear with its first
/// task_eval record, and streams text in the playground.
/// The screenshot is kept at bin/…/artifacts/dashboard.png.
/// </summary>
[Collection("Serving")]
public class DashboardBrowserTests(ServingFixture f, ITestOutputHelper output)
{
    public const string Chromium = "/usr/bin/chromium";
    public static string ScreenshotPath => Path.Combine(AppContext.BaseDirectory, "artifacts", "dashboard.png");

    [Fact]
    public async Task Chromium_sees_the_loss_chart_and_streams_a_completion_in_the_playground()
    {
        Assert.True(File.Exists(Chromium), $"{Chromium} is missing: install chromium (scripts/setup.sh does: apt-get install chromium)");
        using var profile = new TempDir();
        using var pw = await Playwright.CreateAsync();
        IBrowserContext browser;
        try
        {
            browser = await pw.Chromium.LaunchPersistentContextAsync(profile.Path, new BrowserTypeLaunchPersistentContextOptions
            {
                ExecutablePath = Chromium, Headless = true, ViewportSize = new ViewportSize { Width = 1400, Height = 1000 },
                Args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync"],
            });
        }
        catch (PlaywrightException e)
        {
            throw new Xunit.Sdk.XunitException($"Playwright could not start {Chromium}: {e.Message}");
        }
        await using var _ = browser;
        var page = browser.Pages.Count > 0 ? browser.Pages[0] : await browser.NewPageAsync();
        var consoleErrors = new List<string>();
        page.Console += (_, m) => { if (m.Type == "error") consoleErrors.Add(m.Text); };
        page.PageError += (_, e) => consoleErrors.Add(e);
        await page.GotoAsync(f.Server.Url + "/");

        // Runs page: the run is listed and the loss chart has its 300 train points (+6 val) drawn on a canvas.
        await page.Locator("#run-list tbody tr", new() { HasText = "tiny-run" }).WaitForAsync(new() { Timeout = 15000 });
        await page.WaitForFunctionAsync("() => +document.querySelector('#chart-loss').dataset.points >= 300", null, new() { Timeout = 15000 });
        Assert.True(await page.Locator("#chart-loss canvas").CountAsync() > 0, "no chart canvas");
        Assert.Contains("finished", await page.Locator("#run-list").InnerTextAsync());
        Assert.Contains("300", await page.Locator("#checkpoints").InnerTextAsync());

        // Live update: a new step appended to metrics.jsonl shows up without reloading.
        // The step carries an MoE record (the trainer's own "moe" object: expert load per layer), which draws the expert-load chart.
        var moe = Supercluster.Parallelism.ExpertParallel.MetricsJson(new Supercluster.Training.StepResult(1.0, 1.0, 0)
            { Moe = [new Supercluster.Training.MoeLayerStats(0, [0.5, 0.25, 0.25, 0], 1.1, 0.5, 0)] });
        File.AppendAllText(Path.Combine(f.RunDir, "metrics.jsonl"),
            new JsonObject { ["type"] = "train", ["step"] = 301, ["loss"] = 1.0, ["lr"] = 1e-3, ["tokens_per_s"] = 1000.0, ["mfu"] = null, ["moe"] = moe }.ToJsonString() + "\n");
        await page.WaitForFunctionAsync("() => +document.querySelector('#chart-loss').dataset.points >= 301", null, new() { Timeout = 10000 });
        await page.WaitForFunctionAsync("() => +document.querySelector('#chart-moe').dataset.points >= 1", null, new() { Timeout = 10000 });
        Assert.True(await page.Locator("#chart-moe canvas").CountAsync() > 0, "no expert-load chart");

        // Task accuracy (train --eval-task): no chart until a task_eval record arrives, then one point per step and a
        // series per task, the record written by the same method the trainer logs with.
        Assert.Equal("0", await page.GetAttributeAsync("#chart-task", "data-points"));
        var task = new Supercluster.Evaluation.TaskResult("hellaswag_val", "hellaswag_val.jsonl", 8, 3, 5, 0, new Dictionary<string, int> { ["hellaswag"] = 8 });
        File.AppendAllText(Path.Combine(f.RunDir, "metrics.jsonl"), Supercluster.Evaluation.TaskEval.MetricsRecord(task, 301, 1.0).ToJsonString() + "\n");
        await page.WaitForFunctionAsync("() => +document.querySelector('#chart-task').dataset.points >= 1", null, new() { Timeout = 10000 });
        Assert.True(await page.Locator("#chart-task canvas").CountAsync() > 0, "no task chart canvas");
        Assert.Contains("hellaswag_val acc_norm", await page.Locator("#chart-task").InnerTextAsync());

        // Playground: type a prompt, generate, see streamed text arrive.
        await page.ClickAsync("#tab-playground");
        await page.FillAsync("#prompt", "We the people");
        await page.FillAsync("#max-tokens", "40");
        await page.FillAsync("#temperature", "0");
        await page.ClickAsync("#generate");
        await page.WaitForFunctionAsync("() => document.querySelector('#output').textContent.length > 'We the people'.length + 10", null, new() { Timeout = 15000 });
        await page.WaitForFunctionAsync("() => document.querySelector('#gen-stats').textContent.includes('finish')", null, new() { Timeout = 15000 });
        var text = await page.TextContentAsync("#output");
        var (_, api) = await f.Http.PostJson("/v1/completions", new JsonObject { ["prompt"] = "We the people", ["max_tokens"] = 40, ["temperature"] = 0 });
        Assert.Equal("We the people" + (string?)api["choices"]![0]!["text"], text);
        output.WriteLine($"playground: {text}");

        // Search box (an index is loaded).
        await page.FillAsync("#search-query", ServingFixture.Docs[0].Text);
        await page.ClickAsync("#search-button");
        await page.Locator("#search-results li").First.WaitForAsync(new() { Timeout = 10000 });
        Assert.Contains("year: 1999", await page.InnerTextAsync("#search-results"));

        // Screenshot of the runs page with charts (kept as an artifact) and of the playground.
        await page.ClickAsync("#tab-runs");
        Directory.CreateDirectory(Path.GetDirectoryName(ScreenshotPath)!);
        await page.ScreenshotAsync(new() { Path = ScreenshotPath, FullPage = true });
        await page.ClickAsync("#tab-playground");
        await page.ScreenshotAsync(new() { Path = Path.Combine(Path.GetDirectoryName(ScreenshotPath)!, "playground.png"), FullPage = true });
        output.WriteLine($"dashboard screenshot: {ScreenshotPath}");
        Console.WriteLine($"dashboard screenshot: {ScreenshotPath}");
        Assert.True(new FileInfo(ScreenshotPath).Length > 10_000);
        Assert.Empty(consoleErrors);
    }
}
