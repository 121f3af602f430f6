#!/usr/bin/env node
// Says plainly when this Node.js is too old for Tidemark, before anything is built or run.
// Written for any Node that can run an ES module, so that an old one gets this message rather
// than a syntax error.
//
// Why 20.19 (or 22.12 on Node 22): two packages Tidemark loads at start are ES modules only and
// are require()d by CommonJS packages: content-disposition 3 (by @fastify/static, behind the
// /docs page) and cookie 2 (by light-my-request, behind app.inject). Node runs require() of an
// ES module without a flag from 20.19 and 22.12 on; older versions stop with ERR_REQUIRE_ESM.
// Both packages declare "node": ">=22", hence npm's EBADENGINE warnings on Node 20, but the
// whole test suite passes on Node 20.19+.
const [major, minor] = process.versions.node.split(".").map(Number);
const supported = major === 20 ? minor >= 19 : major === 22 ? minor >= 12 : major >= 23;
if (!supported) {
  console.error(
    `Tidemark needs Node.js 20.19 or later (on 22: 22.12 or later); this is ${process.versions.node}.\n` +
      "Install a current Node.js (https://nodejs.org, or `nvm install 22`) and run the command again.",
  );
  process.exit(1);
}
