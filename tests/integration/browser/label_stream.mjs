// An annotator in headless Chromium: log in, open a project, click "Label All Tasks", note the
// task served and which choices are pre-selected, Submit, note the next task served.
// Usage: node label_stream.mjs '{"url", "email", "password", "project", "out"}'
// Prints {"served": [{"task", "checked", "screenshot"}, ...]} as JSON on stdout.
import { chromium } from 'playwright-core';

const { url, email, password, project, out } = JSON.parse(process.argv[2]);
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: FLAGS, headless: true,
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(60_000);
  // The label stream asks Label Studio for each task it shows: that answer names the task.
  const nextTask = () => page.waitForResponse(
    (r) => r.url().includes('/api/dm/actions') && r.url().includes('id=next_task') && r.ok(),
  ).then((r) => r.json());

  await page.goto(`${url}/user/login/`);
  await page.fill('input[name=email]', email);
  await page.fill('input[name=password]', password);
  await Promise.all([page.waitForURL((u) => !u.pathname.startsWith('/user/login')),
    page.click('button[type=submit]')]);

  await page.goto(`${url}/projects/${project}/data`);
  const served = [];
  const first = nextTask();
  await page.getByRole('button', { name: /Label All Tasks/i }).click();
  served.push(await shown(page, await first, 'first'));

  const second = nextTask();
  await page.getByRole('button', { name: 'Submit current annotation' }).click();
  served.push(await shown(page, await second, 'second'));
  console.log(JSON.stringify({ served }));
} finally {
  await browser.close();
}

// Wait until `task` is on screen with its image loaded and the choices drawn, then record it.
async function shown(page, task, name) {
  // The task id is in the bottom bar (its "#" is drawn by CSS); the image is a blob: URL.
  await page.waitForFunction((id) => {
    const shownId = document.querySelector('[class*="current-task__task-id"]');
    return shownId?.firstChild?.textContent.trim() === String(id) &&
      [...document.images].some((img) => img.src && img.complete && img.naturalWidth > 0);
  }, task.id);
  await page.locator('input[type=checkbox], input[type=radio]').first().waitFor();
  // A pre-annotation is applied right after the task loads; give it a moment to appear.
  await page.locator('input:checked').first().waitFor({ timeout: 10_000 }).catch(() => {});
  const checked = await page.locator('input[type=checkbox]:checked, input[type=radio]:checked')
    .evaluateAll((inputs) => inputs.map((i) => i.name || i.value));
  const screenshot = `${out}/${name}-task-${task.id}.png`;
  await page.screenshot({ path: screenshot });
  return { task: task.id, checked, screenshot };
}
