/** The error family's helpers: what callers rely on when they keep only nixseal's own errors. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { NixsealError, rethrowUnlessNixseal } from "../../src/common/index.js";

test("rethrowUnlessNixseal returns for a NixsealError and rethrows anything else unchanged", () => {
  const own = new NixsealError("IO", "cannot read x", { hint: "check the path" });
  assert.doesNotThrow(() => rethrowUnlessNixseal(own));
  const bug = new TypeError("a bug");
  assert.throws(
    () => rethrowUnlessNixseal(bug),
    (e) => e === bug,
  );
  assert.throws(
    () => rethrowUnlessNixseal("a string"),
    (e) => e === "a string",
  );
});
