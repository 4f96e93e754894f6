/**
 * V8's efficiency mode, for a process about to keep both cores busy with its own JavaScript
 * threads (the install's decrypt worker). In that mode V8 (Node 24) waits until
 * a function has run 15 000 times before it compiles it with TurboFan, its slowest compiler, and
 * compiles and collects garbage on the thread that runs the JavaScript instead of on helper
 * threads. With two JavaScript threads on two cores, those helpers have no idle core to run on:
 * they take their CPU from the threads doing the work, for compilations that rarely pay back
 * within one command (bench/RESULTS.md, "V8's efficiency mode"). With one JavaScript thread the
 * helpers use the idle core for free and the default is faster, so the mode is entered only
 * when the threads start, not for every command. Not for rekey's workers either: they wait on
 * fsync, which leaves the helpers room, and the one recording with the mode there did not show
 * it to help.
 *
 * Set with v8.setFlagsFromString once the process runs, which Node's documentation says to use
 * with care: a flag V8 reads only at start-up may do nothing then. This one is read each time
 * V8 decides (Isolate::EfficiencyModeEnabled), so it takes effect at once, and threads started
 * after it have it from their start; test/common/efficiency-mode.test.ts checks that with V8's
 * own answer. Node 22's V8 accepts the flag and changes nothing.
 */
import { createRequire } from "node:module";

let entered = false;

/** Puts this process's V8 in efficiency mode (see above); never fails, only returns false. */
export function enterEfficiencyMode(): boolean {
  if (entered) return true;
  try {
    // Loaded only here: no command needs node:v8 at start-up.
    const v8 = createRequire(import.meta.url)("node:v8") as typeof import("node:v8");
    v8.setFlagsFromString("--efficiency-mode");
    entered = true;
  } catch {
    // Without it the threads only compete more with V8's helpers.
  }
  return entered;
}
