// First paint with data of the dashboard, in Debian's Chromium driven by
// playwright-core (npm): for each of N loads in a fresh page, the wall time
// from navigation to the first render with data (body[data-loaded]) and the
// page's own performance.now() at that render (data-loaded-ms). Prints one
// JSON line. Used by `cargo bench --bench benches -- ops/dashboard`, which
// installs playwright-core into /var/tmp/mend-pw if npm is there.
//   NODE_PATH=/var/tmp/mend-pw/node_modules node scripts/bench-dashboard.cjs URL [N]
const { chromium } = require("playwright-core");
(async () => {
  const [url, n = "5"] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const wall = [], page_ms = [];
  for (let i = 0; i < Number(n); i++) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    const t0 = Date.now();
    await page.goto(url);
    await page.waitForSelector("body[data-loaded]", { timeout: 30000 });
    wall.push(Date.now() - t0);
    page_ms.push(Number(await page.getAttribute("body", "data-loaded-ms")));
    await ctx.close();
  }
  await browser.close();
  console.log(JSON.stringify({ url, wall_ms: wall, page_ms }));
})().catch((e) => { console.error(e.message); process.exit(1); });
