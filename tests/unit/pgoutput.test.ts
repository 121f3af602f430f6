import assert from "node:assert/strict";
import { test } from "node:test";
import { parseTimestamptz } from "../../src/backends/postgres/postgres.change-feed.js";
import {
  decodeFrame,
  formatLsn,
  parseLsn,
  standbyStatus,
} from "../../src/backends/postgres/postgres.pgoutput.js";

/** A pgoutput message wrapped in an XLogData ('w') frame starting at `lsn`. */
function xlog(lsn: bigint, message: Buffer): Buffer {
  const header = Buffer.alloc(25);
  header.write("w", 0);
  header.writeBigUInt64BE(lsn, 1);
  header.writeBigUInt64BE(lsn, 9);
  return Buffer.concat([header, message]);
}

const cstring = (s: string) => Buffer.concat([Buffer.from(s), Buffer.from([0])]);
const int16 = (n: number) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const int32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32BE(n);
  return b;
};
const int64 = (n: bigint) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};

test("pgoutput: relation, insert (text values, null) and commit are decoded", () => {
  const relation = Buffer.concat([
    Buffer.from("R"),
    int32(16385),
    cstring("public"),
    cstring("events"),
    Buffer.from("d"),
    int16(2),
    Buffer.from([0]),
    cstring("uuid"),
    int32(2950),
    int32(-1),
    Buffer.from([0]),
    cstring("properties"),
    int32(114),
    int32(-1),
  ]);
  assert.deepEqual(decodeFrame(xlog(1n, relation)), {
    kind: "xlog",
    start: 1n,
    message: {
      tag: "relation",
      oid: 16385,
      schema: "public",
      name: "events",
      columns: ["uuid", "properties"],
    },
  });
  const json = '{"a": 1.50, "é": "\\u0000"}';
  const insert = Buffer.concat([
    Buffer.from("I"),
    int32(16385),
    Buffer.from("N"),
    int16(3),
    Buffer.from("t"),
    int32(Buffer.byteLength(json)),
    Buffer.from(json),
    Buffer.from("n"),
    Buffer.from("t"),
    int32(0),
  ]);
  const decoded = decodeFrame(xlog(2n, insert));
  assert.deepEqual(decoded?.kind === "xlog" && decoded.message, {
    tag: "insert",
    oid: 16385,
    values: [json, null, ""],
  });
  const commit = Buffer.concat([
    Buffer.from("C"),
    Buffer.from([0]),
    int64(0x10n),
    int64(0x1_0000_0020n),
    int64(0n),
  ]);
  const c = decodeFrame(xlog(3n, commit));
  assert.deepEqual(c?.kind === "xlog" && c.message, {
    tag: "commit",
    commitLsn: 0x10n,
    endLsn: 0x1_0000_0020n,
  });
});

test("pgoutput: keepalives, LSN text and the standby status update", () => {
  const keepalive = Buffer.alloc(18);
  keepalive.write("k", 0);
  keepalive.writeBigUInt64BE(0x2_0000_0001n, 1);
  keepalive.writeUInt8(1, 17);
  assert.deepEqual(decodeFrame(keepalive), {
    kind: "keepalive",
    walEnd: 0x2_0000_0001n,
    replyRequested: true,
  });
  assert.equal(formatLsn(0x16_b374_d848n), "16/B374D848");
  assert.equal(parseLsn("16/B374D848"), 0x16_b374_d848n);
  assert.equal(parseLsn(formatLsn(0n)), 0n);
  // The flushed position is sent as it is: +1 would skip a transaction whose commit record starts
  // exactly where the acknowledged one ended.
  const status = standbyStatus(0x16_b374_d848n);
  assert.equal(status.length, 34);
  assert.equal(String.fromCharCode(status[0]!), "r");
  assert.equal(status.readBigUInt64BE(9), 0x16_b374_d848n);
});

test("timestamptz text (ISO, UTC) to epoch milliseconds", () => {
  assert.equal(parseTimestamptz("2026-11-29 01:02:03.456+00"), Date.UTC(2026, 10, 29, 1, 2, 3, 456));
  assert.equal(parseTimestamptz("2026-11-29 01:02:03+00"), Date.UTC(2026, 10, 29, 1, 2, 3));
  assert.ok(Number.isNaN(parseTimestamptz("not a time")));
});

test("timestamptz text: the digit-by-digit reading agrees with Date.parse on every form", () => {
  const byDateParse = (text: string) => Date.parse(text.replace(" ", "T").replace(/([+-]\d\d)$/, "$1:00"));
  const texts = [
    "2026-11-29 01:02:03.4+00",
    "2026-11-29 01:02:03.45+00",
    "2026-11-29 01:02:03.456789+00",
    "2024-02-29 23:59:59.999+00",
    "2026-11-31 01:02:03+00",
    "2026-02-29 01:02:03+00",
    "2026-13-01 01:02:03+00",
    "2026-11-29 24:00:00+00",
    "2026-11-29 01:60:03+00",
    "2026-11-29 01:02:03.+00",
    "2026-11-29 01:02:03.1234567+00",
    "2026-11-29 01:02:03.456+05:30",
    "2026-11-29 01:02:03.456-08",
    "0099-11-29 01:02:03+00",
    "2026-1x-29 01:02:03+00",
    "2026-11-29T01:02:03+00",
    "",
  ];
  // Postgres's text of times from 1970 to 2100, with 0 to 6 fraction digits, trailing zeros cut.
  for (let i = 0; i < 20_000; i++) {
    const ms = Math.floor(Math.random() * 4.1e12);
    const iso = new Date(ms).toISOString().replace("T", " ").replace("Z", "");
    const micros = String(Math.floor(Math.random() * 1e6))
      .padStart(6, "0")
      .slice(0, i % 7);
    const fraction = `${iso.slice(19, 23)}${micros}`.replace(/\.?0+$/, "");
    texts.push(`${iso.slice(0, 19)}${fraction}+00`);
  }
  for (const text of texts) assert.equal(parseTimestamptz(text), byDateParse(text), text);
});
