// The client's pure pieces (backoff, the SSE parser) and its packaging: both builds load, one version.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import vm from "node:vm";

import Realtime, * as named from "../../static/realtime/realtime.mjs";

const PACKAGE = new URL("../../static/realtime/", import.meta.url);
const { SSEParser } = Realtime.internals;

describe("backoff", () => {
  test("full jitter: random times min(cap, base x 2^attempt)", () => {
    const top = () => 0.999999;
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 10, 60].map((attempt) => Realtime.backoff(attempt, 2000, 30000, top)),
      [1999, 3999, 7999, 15999, 29999, 29999, 29999, 29999],
    );
    assert.equal(
      Realtime.backoff(3, 2000, 30000, () => 0),
      0,
    );
    assert.equal(
      Realtime.backoff(1, 2000, 30000, () => 0.5),
      2000,
    );
  });

  test("spreads clients out: 1000 first reconnects cover the whole window", () => {
    const delays = Array.from({ length: 1000 }, () => Realtime.backoff(0, 2000, 30000));
    assert.ok(
      Math.min(...delays) < 200 && Math.max(...delays) > 1800,
      `${Math.min(...delays)}..${Math.max(...delays)}`,
    );
  });
});

describe("SSE parser", () => {
  const frames = (...chunks) => {
    const parser = new SSEParser();
    const out = chunks.flatMap((chunk) => parser.push(chunk));
    return { out, parser };
  };

  test("LF, CRLF and CR line ends, even split across chunks", () => {
    const { out } = frames("event: a\ndata: 1\n\nevent: b\r", "\ndata: 2\r", "\n\r\nevent: c\rdata: 3\r\r", ":\n");
    assert.deepEqual(
      out.map((frame) => [frame.event, frame.data]),
      [
        ["a", "1"],
        ["b", "2"],
        ["c", "3"],
      ],
    );
  });

  test("comments, a BOM, retry, multi-line data, and frames without data", () => {
    const { out, parser } = frames(
      "\ufeffretry: 2500\n\n: keep-alive\n\nevent: x\n\n",
      "data: one\ndata:two\nid: t:e:1\n\n",
    );
    assert.equal(parser.retry, 2500);
    assert.deepEqual(out, [{ event: "message", data: "one\ntwo", id: "t:e:1" }]);
  });

  test("an id with NUL and a non-numeric retry are ignored", () => {
    const { out, parser } = frames("retry: soon\nid: a\0b\ndata: x\n\n");
    assert.equal(parser.retry, null);
    assert.equal(out[0].id, null);
  });
});

describe("packaging", () => {
  test("the module exports the one Realtime object", () => {
    assert.equal(globalThis.Realtime, Realtime);
    assert.equal(named.Realtime, Realtime);
    assert.equal(named.connect, Realtime.connect);
    assert.equal(named.Client, Realtime.Client);
    assert.equal(named.RealtimeError, Realtime.RealtimeError);
  });

  test("realtime.js runs as a classic script, and a second load keeps the first copy", () => {
    const source = readFileSync(new URL("realtime.js", PACKAGE), "utf8");
    const context = vm.createContext({ crypto: globalThis.crypto, console });
    vm.runInContext(source, context);
    const first = context.Realtime;
    assert.equal(first.VERSION, Realtime.VERSION);
    vm.runInContext(source, context);
    assert.equal(context.Realtime, first);
  });

  test("package.json, the module and the declarations agree", () => {
    const pkg = JSON.parse(readFileSync(new URL("package.json", PACKAGE), "utf8"));
    assert.equal(pkg.version, Realtime.VERSION);
    assert.equal(pkg.exports["."].import, "./realtime.mjs");
    const types = readFileSync(new URL(pkg.types, PACKAGE), "utf8");
    for (const name of ["connect", "Client", "RealtimeError", "backoff", "VERSION", "Subscription", "State"]) {
      assert.match(types, new RegExp(`\\b${name}\\b`), `realtime.d.ts declares ${name}`);
    }
    for (const file of pkg.files) readFileSync(new URL(file, PACKAGE)); // every listed file exists
  });
});
