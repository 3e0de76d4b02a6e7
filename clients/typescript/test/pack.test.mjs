// `npm pack` gives a package that installs on its own and exports the API with types.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const PACKAGE = fileURLToPath(new URL("..", import.meta.url));

test("the packed tarball installs and imports", () => {
  const work = mkdtempSync(join(tmpdir(), "baton-pack-"));
  try {
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--pack-destination", work], { cwd: PACKAGE }),
    )[0];
    const files = packed.files.map((file) => file.path).sort();
    for (const file of ["dist/index.js", "dist/index.d.ts", "dist/verify.d.ts", "package.json", "README.md"]) {
      assert.ok(files.includes(file), `${file} is packed`);
    }
    assert.ok(!files.some((file) => file.startsWith("test/") || file.startsWith("src/")));

    const app = join(work, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", type: "module" }));
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", join(work, packed.filename)], {
      cwd: app,
    });
    const out = execFileSync(
      "node",
      [
        "--input-type=module",
        "-e",
        "import * as baton from 'baton-workflow-client';" +
          "console.log(Object.keys(baton).sort().join(','));",
      ],
      { cwd: app, encoding: "utf8" },
    );
    assert.deepEqual(out.trim().split(","), [
      "BatonClient",
      "DEFAULT_TOLERANCE",
      "InvalidSecretError",
      "ProblemError",
      "TERMINAL_STATUSES",
      "WaitTimeoutError",
      "Workflows",
      "batonMiddleware",
      "decodeSecret",
      "verifyRequest",
      "verifySignature",
    ]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
