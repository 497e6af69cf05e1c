import { createServer } from "node:http";
import { readFileSync } from "node:fs";
import { extname, join } from "node:path";
import { chromium } from "playwright-core";
const [root, model, picture, out] = process.argv.slice(2);
const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };
const server = createServer((req, res) => {
  const p0 = new URL(req.url, "http://x").pathname; const p = p0 === "/" ? "/index.html" : p0;
  try { const b = readFileSync(join(root, p)); res.writeHead(200, { "content-type": MIME[extname(p)] ?? "application/octet-stream" }); res.end(b); } catch { res.writeHead(404).end(); }
});
await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-angle=swiftshader"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
page.on("console", (m) => console.log(m.type(), m.text()));
await page.goto(`http://127.0.0.1:${server.address().port}/?model=resnet8&batch=32&train=2048&test=512&epochs=6&lr=0.05`);
await page.waitForFunction(() => document.body.dataset.tools === "ready", null, { timeout: 120000 });
const [chooser] = await Promise.all([page.waitForEvent("filechooser"), page.click("#open")]);
await chooser.setFiles(model);
await page.waitForFunction(() => document.body.dataset.opened, null, { timeout: 120000 });
const [pick] = await Promise.all([page.waitForEvent("filechooser"), page.click("#pick")]);
await pick.setFiles(picture);
await page.waitForFunction(() => document.body.dataset.predictions, null, { timeout: 120000 });
await page.waitForTimeout(3000);
console.log(await page.evaluate(() => document.getElementById("status").innerText));
console.log(await page.evaluate(() => document.body.dataset.prediction));
await page.screenshot({ path: out });
await browser.close(); server.close();
