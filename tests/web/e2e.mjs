// End-to-end test of the browser demo: serves the built site (scripts/build-web.sh)
// on 127.0.0.1, drives Debian's chromium with playwright-core, and checks that
//  1. with WebGPU (SwiftShader), the page finds an adapter and trains a short
//     run to its end, the loss falls, the console shows no errors, and the
//     canvas is not blank; "Save model" downloads a model file that the native
//     binary evaluates to the tab's last evaluation (screenshot kept);
//  2. a reload offers the model the page kept (IndexedDB) instead of training;
//     restored, it classifies a dropped picture; the saved file opened with
//     "Open model" classifies it (picked with "Picture…") as the native
//     `predict` does; a broken file
//     is refused on the page (screenshots with a prediction kept);
//  3. the camera (chromium's fake device) is classified while a run trains;
//  4. without WebGPU, the page says what is missing instead of a blank canvas.
// Prints "N passed, M failed" and exits non-zero on any failure.
//
// Usage: node e2e.mjs [site dir, default ../../dist] [artifacts dir, default ../../ci-artifacts]
// The native binary is RESNET_WGPU_BIN (default target/debug/resnet-wgpu).

import { createServer } from "node:http";
import { spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { extname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const site = resolve(process.argv[2] ?? join(here, "../../dist"));
const artifacts = resolve(process.argv[3] ?? join(here, "../../ci-artifacts"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const BIN = resolve(process.env.RESNET_WGPU_BIN ?? join(here, "../../target/debug/resnet-wgpu"));
const TRAIN_TIMEOUT_MS = 420_000;
// A short run for the test: ResNet-8 on 64 pictures (4 steps per epoch, 32
// steps), which it starts to memorize within them (natively: mean loss 2.57
// in epoch 1, 1.76 in epoch 8). The native eval below reads the same data.
const TRAIN = 64, TEST = 32, EPOCHS = 8;
const QUERY = `?model=resnet8&batch=16&train=${TRAIN}&test=${TEST}&epochs=${EPOCHS}&lr=0.1`;
const SYNTHETIC_FLAGS = ["--dataset", "synthetic", "--synthetic-train", `${TRAIN}`, "--synthetic-test", `${TEST}`];

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

async function browser(flags, profile = mkdtempSync(join(tmpdir(), "resnet-wgpu-chromium-"))) {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_FLAGS, ...flags],
    viewport: { width: 1280, height: 800 },
  });
  const close = async (keepProfile = false) => {
    await context.close();
    if (!keepProfile) rmSync(profile, { recursive: true, force: true });
  };
  return { context, close, profile };
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

/** A page that fails the test on console errors and page errors. */
async function watchedPage(context) {
  const errors = [];
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
    else console.log(`  [page ${m.type()}] ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`page error: ${e.message}`));
  const noErrors = () => check(errors.length === 0, errors.join("\n"));
  return { page, noErrors };
}

/** The canvas's published progress and the page's own data attributes. */
const progressOf = (page) => page.evaluate(() => ({
  webgpu: document.body.dataset.webgpu,
  message: document.getElementById("message").innerText,
  page: { ...document.body.dataset },
  ...document.getElementById("resnet_canvas").dataset,
}));

/** Polls `progressOf` until `done(progress)`, failing on errors or after `timeout` ms. */
async function waitFor(page, noErrors, what, done, timeout = TRAIN_TIMEOUT_MS) {
  const started = Date.now();
  for (;;) {
    const progress = await progressOf(page);
    check(progress.webgpu !== "missing", `the page found no WebGPU adapter: ${progress.message}`);
    check(!progress.error, `training failed in the page: ${progress.error}`);
    noErrors();
    if (done(progress)) return progress;
    check(Date.now() - started < timeout, `${what}: not after ${timeout / 1000} s (${JSON.stringify(progress)})`);
    await page.waitForTimeout(500);
  }
}

function native(args) {
  const run = spawnSync(BIN, args, { encoding: "utf8", env: process.env });
  check(run.status === 0, `${BIN} ${args.join(" ")} failed (${run.status}): ${run.stderr}${run.error ?? ""}`);
  return JSON.parse(run.stdout.trim().split("\n").pop());
}

// Shared by the tests that follow one another in one browser profile.
const state = { profile: null, model: null, testAcc: null };

async function trainsInTheTab(url) {
  const { context, close, profile } = await browser(WEBGPU_FLAGS);
  let keep = false;
  try {
    const { page, noErrors } = await watchedPage(context);
    await page.goto(url + QUERY);
    const started = Date.now();
    const progress = await waitFor(page, noErrors, "the run's end", (p) => p.state === "finished");
    const seconds = (Date.now() - started) / 1000;
    check(progress.adapter, "no adapter name published");
    const losses = progress.losses.split(",").map(Number);
    const before = mean(losses.slice(0, 5));
    const after = mean(losses.slice(-5));
    check(["f32", "f16"].includes(progress.precision), `precision published: ${progress.precision}`);
    console.log(`  adapter: ${progress.adapter} (${progress.precision}); ${progress.steps} steps in ${seconds.toFixed(0)} s; ` +
      `loss ${before.toFixed(3)} (first 5 steps) -> ${after.toFixed(3)} (last 5)`);
    check(Number(progress.steps) === EPOCHS * TRAIN / 16, `${progress.steps} steps`);
    check(losses.length >= 30, `${losses.length} losses published for ${progress.steps} steps`);
    check(losses.every(Number.isFinite), "a loss is not a number");
    check(after < before, `the loss did not fall: ${before} -> ${after}`);

    // The page keeps the model after each evaluation (for a reload).
    await waitFor(page, noErrors, "the evaluated model kept", (p) => p.page.kept === p.evaluations, 30_000);

    await page.waitForTimeout(1500); // a frame or two after the last report
    mkdirSync(artifacts, { recursive: true });
    const shot = join(artifacts, "web-e2e.png");
    const png = await page.locator("#resnet_canvas").screenshot({ path: shot });
    const { colors, deviation } = pictureStats(png);
    console.log(`  screenshot ${shot}: ${colors} colours, luminance deviation ${deviation.toFixed(3)}`);
    check(colors >= 200 && deviation > 0.05, "the canvas screenshot looks blank");

    // Save model: a desktop model file the native binary evaluates alike.
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#save")]);
    const file = join(artifacts, download.suggestedFilename());
    await download.saveAs(file);
    check(/^resnet8-step32\.safetensors$/.test(download.suggestedFilename()), `download named ${download.suggestedFilename()}`);
    const tab = { accuracy: Number(progress.testAcc), loss: Number(progress.testLoss) };
    const desktop = native(["eval", "--checkpoint", file, ...SYNTHETIC_FLAGS, "--json"]);
    console.log(`  saved ${file}; tab: accuracy ${tab.accuracy}, loss ${tab.loss.toFixed(4)}; ` +
      `native eval: accuracy ${desktop.accuracy}, loss ${desktop.loss.toFixed(4)}`);
    check(desktop.model === "resnet8" && desktop.samples === TEST, JSON.stringify(desktop));
    // Two drivers may round a near tie apart: one picture of the 32 at most.
    check(Math.abs(desktop.accuracy - tab.accuracy) <= 1 / TEST + 1e-6, "the accuracies differ");
    check(Math.abs(desktop.loss - tab.loss) <= 1e-3 * Math.max(1, tab.loss), "the losses differ");
    noErrors();
    Object.assign(state, { profile, model: file, testAcc: tab.accuracy });
    keep = true;
  } finally {
    await close(keep);
  }
}

/** A 48x40 PNG with a diagonal pattern, written under the artifacts folder. */
function writePicture() {
  const png = new PNG({ width: 48, height: 40 });
  for (let y = 0; y < 40; y++) {
    for (let x = 0; x < 48; x++) {
      const i = 4 * (y * 48 + x);
      const on = (x + y) % 12 < 6;
      png.data.set([on ? 230 : 30, on ? 200 : 60, (x * 5) % 256, 255], i);
    }
  }
  const path = join(artifacts, "picture.png");
  mkdirSync(artifacts, { recursive: true });
  writeFileSync(path, PNG.sync.write(png));
  return path;
}

/** Drops files on the canvas as a user would (the page's handler takes them first). */
async function drop(page, files) {
  const payload = files.map(({ name, path, type }) => ({ name, type, data: readFileSync(path).toString("base64") }));
  await page.evaluate((files) => {
    const transfer = new DataTransfer();
    for (const { name, type, data } of files) {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      transfer.items.add(new File([bytes], name, { type }));
    }
    const canvas = document.getElementById("resnet_canvas");
    canvas.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
  }, payload);
}

async function dropPicture(page, noErrors, picture) {
  const before = Number((await progressOf(page)).page.predictions ?? 0);
  await drop(page, [{ name: "picture.png", path: picture, type: "image/png" }]);
  const p = await waitFor(page, noErrors, "a prediction", (p) => Number(p.page.predictions ?? 0) > before, 60_000);
  check(!p.page.toolError, `the page said: ${p.page.toolError}`);
  return JSON.parse(p.page.prediction);
}

async function restoresOpensAndPredicts(url) {
  check(state.model, "needs the saved model of the first test");
  const { context, close } = await browser(WEBGPU_FLAGS, state.profile);
  try {
    const { page, noErrors } = await watchedPage(context);
    await page.goto(url + QUERY);
    // The reload offers the kept model and holds training back.
    const restore = page.locator("#restore");
    await restore.waitFor({ state: "visible", timeout: 60_000 });
    const label = await restore.innerText();
    console.log(`  offered: ${label}`);
    check(label.includes("resnet8") && label.includes("step 32"), `offered: ${label}`);
    await page.waitForTimeout(2000);
    check(!(await progressOf(page)).state, "a run started although a kept model is offered");
    await restore.click();
    let p = await waitFor(page, noErrors, "the restored model", (p) => p.page.opened && p.state, 120_000);
    check(p.state === "paused" && p.model === "resnet8", `after restoring: ${p.state} ${p.model}`);

    const picture = writePicture();
    const top = await dropPicture(page, noErrors, picture);
    console.log(`  restored model on the dropped picture: ${top.map((c) => `${c.class} ${(100 * c.probability).toFixed(1)}%`).join(", ")}`);
    check(top.length === 5, `${top.length} classes shown`);
    check(top.every((c, i) => i === 0 || c.probability <= top[i - 1].probability), "not most likely first");
    const shown = await page.locator("#top5 li").count();
    check(shown === 5, `${shown} rows in the list`);
    await page.screenshot({ path: join(artifacts, "web-predict.png") });

    // The saved file through Open model: the picture as the desktop sees it.
    const [chooser] = await Promise.all([page.waitForEvent("filechooser"), page.click("#open")]);
    await chooser.setFiles(state.model);
    p = await waitFor(page, noErrors, "the opened model", (p) => p.page.opened?.endsWith("step32.safetensors"), 120_000);
    // This time through "Picture…" (the picker), not a drop.
    const before = Number(p.page.predictions ?? 0);
    const [pick] = await Promise.all([page.waitForEvent("filechooser"), page.click("#pick")]);
    await pick.setFiles(picture);
    p = await waitFor(page, noErrors, "the picked picture's prediction", (p) => Number(p.page.predictions ?? 0) > before, 60_000);
    check(!p.page.toolError, `the page said: ${p.page.toolError}`);
    const tab = JSON.parse(p.page.prediction);
    const [desktop] = native(["predict", "--checkpoint", state.model, picture, "--json"]);
    console.log(`  opened file, tab: ${tab[0].class} ${tab[0].probability.toFixed(5)}; ` +
      `native predict: ${desktop.top[0].class} ${desktop.top[0].probability.toFixed(5)}`);
    for (let i = 0; i < 5; i++) {
      check(tab[i].class === desktop.top[i].class, `class ${i}: ${tab[i].class} vs ${desktop.top[i].class}`);
      check(Math.abs(tab[i].probability - desktop.top[i].probability) < 1e-3, `probability ${i} differs`);
    }

    // A broken model file is refused on the page, naming it; nothing breaks.
    const broken = join(artifacts, "broken.safetensors");
    writeFileSync(broken, "this is not a model");
    await drop(page, [{ name: "broken.safetensors", path: broken, type: "application/octet-stream" }]);
    p = await waitFor(page, noErrors, "the refusal", (p) => p.page.toolError, 30_000);
    console.log(`  refused: ${p.page.toolError}`);
    check(p.page.toolError.includes("broken.safetensors") && p.page.toolError.includes("safetensors"), p.page.toolError);
    check(p.page.opened?.endsWith("step32.safetensors"), "the refused file replaced the model");
    await page.screenshot({ path: join(artifacts, "web-refused.png") });
    noErrors();
  } finally {
    await close();
  }
}

async function classifiesTheCamera(url) {
  const { context, close } = await browser([...WEBGPU_FLAGS,
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]);
  try {
    const { page, noErrors } = await watchedPage(context);
    await page.goto(url + QUERY);
    await waitFor(page, noErrors, "training", (p) => Number(p.steps ?? 0) >= 2 && p.page.tools === "ready");
    await page.click("#camera");
    const p = await waitFor(page, noErrors, "three camera frames", (p) => Number(p.page.cameraFrames ?? 0) >= 3, 120_000);
    check(!p.page.toolError, `the page said: ${p.page.toolError}`);
    const top = JSON.parse(p.page.prediction);
    console.log(`  ${p.page.cameraFrames} camera frames classified while training (step ${p.steps}); last: ${top[0].class}`);
    check(top.length === 5, `${top.length} classes`);
    await page.screenshot({ path: join(artifacts, "web-camera.png") });
    await page.click("#camera");
    noErrors();
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
  ["trains in the tab on WebGPU; the saved model evaluates alike natively", trainsInTheTab],
  ["a reload restores the kept model; dropped pictures classified as natively", restoresOpensAndPredicts],
  ["classifies the camera while training", classifiesTheCamera],
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
if (state.profile) rmSync(state.profile, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
