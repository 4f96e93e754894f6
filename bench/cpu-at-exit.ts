/**
 * Preloaded into a timed nixseal by bench/push.ts (`node --import`): at exit, writes the process's
 * own CPU time (user + system, ms; all its threads, none of its children) to the file named by
 * NIXSEAL_BENCH_CPU_FILE, so that the benchmark can tell nixseal's CPU from its ssh children's.
 */
import * as fs from "node:fs";

const file = process.env.NIXSEAL_BENCH_CPU_FILE;
if (file !== undefined && file !== "") {
  process.on("exit", () => {
    const u = process.cpuUsage();
    fs.writeFileSync(file, String((u.user + u.system) / 1000));
  });
}
