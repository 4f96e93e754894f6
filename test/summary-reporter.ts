/**
 * A second reporter for `npm test`, after Node's spec reporter: an honest account of what did not
 * run. Node's own summary counts a skipped suite as nothing (its tests never start), so a run
 * where fourteen suites skipped can say "skipped 3". This one lists every skipped suite and test
 * with its reason, and ends with the plain line `N passed, N failed, N skipped` in which a skipped
 * suite counts with the tests it holds.
 *
 * Under CI (CI set and not "false"), anything skipped fails the run: CI installs every tool the
 * tests use (.ci/run), so a skip there means a missing install step, not a missing tool.
 */
import type { TestEvent } from "node:test/reporters";

interface Skip {
  name: string;
  reason: string;
  kind: "suite" | "test";
  file: string | undefined;
}

function inCI(): boolean {
  const ci = process.env.CI;
  return ci !== undefined && ci !== "" && ci !== "false" && ci !== "0";
}

export default async function* summaryReporter(source: AsyncIterable<TestEvent>): AsyncGenerator<string> {
  let passed = 0;
  let failed = 0;
  let skippedTests = 0;
  const skips: Skip[] = [];
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const data = event.data as {
      name: string;
      skip?: string | boolean;
      todo?: string | boolean;
      file?: string;
      details: { type?: "suite" | "test" };
    };
    const kind = data.details.type === "suite" ? "suite" : "test";
    if (data.skip !== undefined && data.skip !== false) {
      skips.push({
        name: data.name,
        reason: data.skip === true ? "" : String(data.skip),
        kind,
        file: data.file,
      });
      // A skipped suite's tests never start: count the suite as one skipped test at least.
      skippedTests++;
      continue;
    }
    if (kind === "suite") continue;
    if (event.type === "test:pass") passed++;
    else failed++;
  }
  const lines: string[] = [];
  if (skips.length > 0) {
    const suites = skips.filter((s) => s.kind === "suite").length;
    lines.push(`skipped: ${skips.length - suites} test(s) and ${suites} whole suite(s):`);
    for (const s of skips) {
      const where = s.file ? ` (${s.file.replace(/^.*\/dist\//, "")})` : "";
      lines.push(`  - ${s.kind} "${s.name}"${where}: ${s.reason || "no reason given"}`);
    }
    if (inCI()) {
      lines.push("CI installs every tool the tests need (.ci/run): a skip here is a missing install step.");
      process.exitCode = 1;
    }
  }
  lines.push(`${passed} passed, ${failed} failed, ${skippedTests} skipped`);
  yield `${lines.join("\n")}\n`;
}
