// End-to-end test of the browser demo: serves the built site (scripts/build-web.sh)
// on 127.0.0.1, drives Debian's chromium with playwright-core, and checks that
//  1. with WebGPU (SwiftShader), the page finds an adapter, trains at least 30
//     steps, the loss after them is below the loss before, the console shows no
//     errors, and the canvas is not blank (screenshot kept);
//  2. without WebGPU, the page says what is missing instead of a blank canvas.
// Prints "N passed, M failed" and exits non-zero on any failure.
//
// Usage: node e2e.mjs [site dir, default ../../dist] [artifacts dir, default ../../ci-artifacts]

import { createServer } from "node:http";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const site = resolve(process.argv[2] ?? join(here, "../../dist"));
const artifacts = resolve(process.argv[3] ?? join(here, "../../ci-artifacts"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const STEPS = 30;
const TRAIN_TIMEOUT_MS = 420_000;
// A short run for the test: ResNet-8 on 64 pictures (4 steps per epoch), which
// it starts to memorize within 30 steps (natively: mean loss 2.57 in epoch 1,
// 1.76 in epoch 8).
const QUERY = "?model=resnet8&batch=16&train=64&test=32&epochs=20&lr=0.1";

const BASE_FLAGS = [
  "--no-sandbox", "--disable-background-networking", "--disable-component-update",
  "--disable-sync", "--no-first-run", "--disable-quic",
];
const WEBGPU_FLAGS = [
  "--enable-unsafe-webgpu", "--enable-features=Vulkan",
  "--use-vulkan=swiftshader", "--use-angle=swiftshader",
];

const MIME = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm" };

function serve(root) {
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://localhost").pathname;
    const file = join(root, path === "/" ? "index.html" : path);
    if (!file.startsWith(root)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = readFileSync(file);
      res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) => server.listen(0, "127.0.0.1", () => ok(server)));
}

async function browser(flags) {
  const profile = mkdtempSync(join(tmpdir(), "resnet-wgpu-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_FLAGS, ...flags],
    viewport: { width: 1280, height: 800 },
  });
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, close };
}

/** Distinct colours and the luminance standard deviation of a PNG. */
function pictureStats(png) {
  const image = PNG.sync.read(png);
  const colors = new Set();
  let sum = 0, sq = 0;
  const n = image.width * image.height;
  for (let i = 0; i < n; i++) {
    const [r, g, b] = image.data.subarray(4 * i, 4 * i + 3);
    colors.add((r << 16) | (g << 8) | b);
    const y = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    sum += y;
    sq += y * y;
  }
  const mean = sum / n;
  return { colors: colors.size, deviation: Math.sqrt(Math.max(0, sq / n - mean * mean)) };
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function trainsInTheTab(url) {
  const { context, close } = await browser(WEBGPU_FLAGS);
  const errors = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(`console: ${m.text()}`);
      else console.log(`  [page ${m.type()}] ${m.text()}`);
    });
    page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
    await page.goto(url + QUERY);

    const started = Date.now();
    let progress = {};
    for (;;) {
      progress = await page.evaluate(() => ({
        webgpu: document.body.dataset.webgpu,
        message: document.getElementById("message").innerText,
        ...document.getElementById("resnet_canvas").dataset,
      }));
      check(progress.webgpu !== "missing", `the page found no WebGPU adapter: ${progress.message}`);
      check(!progress.error, `training failed in the page: ${progress.error}`);
      check(errors.length === 0, errors.join("\n"));
      if (Number(progress.steps ?? 0) >= STEPS) break;
      check(Date.now() - started < TRAIN_TIMEOUT_MS,
        `only ${progress.steps ?? 0} steps after ${TRAIN_TIMEOUT_MS / 1000} s`);
      await page.waitForTimeout(1000);
    }
    const seconds = (Date.now() - started) / 1000;
    check(progress.adapter, "no adapter name published");
    const losses = progress.losses.split(",").map(Number);
    const before = mean(losses.slice(0, 5));
    const after = mean(losses.slice(-5));
    check(["f32", "f16"].includes(progress.precision), `precision published: ${progress.precision}`);
    console.log(`  adapter: ${progress.adapter} (${progress.precision}); ${progress.steps} steps in ${seconds.toFixed(0)} s; ` +
      `loss ${before.toFixed(3)} (first 5 steps) -> ${after.toFixed(3)} (last 5)`);
    check(losses.length >= STEPS, `${losses.length} losses published for ${progress.steps} steps`);
    check(losses.every(Number.isFinite), "a loss is not a number");
    check(after < before, `the loss did not fall: ${before} -> ${after}`);

    await page.waitForTimeout(1500); // a frame or two after the last report
    mkdirSync(artifacts, { recursive: true });
    const shot = join(artifacts, "web-e2e.png");
    const png = await page.locator("#resnet_canvas").screenshot({ path: shot });
    const { colors, deviation } = pictureStats(png);
    console.log(`  screenshot ${shot}: ${colors} colours, luminance deviation ${deviation.toFixed(3)}`);
    check(colors >= 200 && deviation > 0.05, "the canvas screenshot looks blank");
    check(errors.length === 0, errors.join("\n"));
  } finally {
    await close();
  }
}

async function saysWhatIsMissingWithoutWebGPU(url) {
  const { context, close } = await browser(["--disable-blink-features=WebGPU"]);
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    await page.goto(url);
    const message = page.locator("#message");
    await message.waitFor({ state: "visible", timeout: 30_000 });
    const text = await message.innerText();
    console.log(`  message: ${text.split("\n")[0]}`);
    check(text.includes("WebGPU"), `the message does not name WebGPU: ${text}`);
    check(text.includes("Chrome") && text.includes("Safari"), "the message names no browsers");
    check(!(await page.locator("#resnet_canvas").isVisible()), "a blank canvas is still shown");
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: join(artifacts, "web-no-webgpu.png") });
  } finally {
    await close();
  }
}

const server = await serve(site);
const url = `http://127.0.0.1:${server.address().port}/`;
console.log(`serving ${site} at ${url}`);
let passed = 0, failed = 0;
for (const [name, test] of [
  ["trains in the tab on WebGPU", trainsInTheTab],
  ["says what is missing without WebGPU", saysWhatIsMissingWithoutWebGPU],
]) {
  console.log(`test: ${name}`);
  try {
    await test(url);
    passed++;
    console.log(`  ok`);
  } catch (e) {
    failed++;
    console.log(`  FAILED: ${e.message}`);
  }
}
server.close();
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
