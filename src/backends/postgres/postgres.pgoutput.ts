/**
 * The few messages of Postgres's logical replication protocol (`pgoutput`, protocol version 1) the
 * change feed needs, decoded from the CopyData payloads of a replication connection. Column
 * values stay in Postgres's text form, exactly as stored (the JSON text of `properties` is never
 * re-serialised).
 */

export type PgoutputMessage =
  | { tag: "begin"; finalLsn: bigint }
  | { tag: "commit"; commitLsn: bigint; endLsn: bigint }
  | { tag: "relation"; oid: number; schema: string; name: string; columns: string[] }
  | { tag: "insert"; oid: number; values: (string | null)[] }
  | { tag: "other"; type: string };

/** A frame of the replication stream: WAL data (`w`) or a keepalive (`k`). */
export type ReplicationFrame =
  | { kind: "xlog"; start: bigint; message: PgoutputMessage }
  | { kind: "keepalive"; walEnd: bigint; replyRequested: boolean };

export function decodeFrame(buffer: Buffer): ReplicationFrame | undefined {
  const kind = buffer[0];
  if (kind === 0x77) {
    // 'w': Int64 start, Int64 end of WAL on the server, Int64 send time, then the message.
    return { kind: "xlog", start: buffer.readBigUInt64BE(1), message: decodeMessage(buffer.subarray(25)) };
  }
  if (kind === 0x6b) {
    // 'k': Int64 end of WAL, Int64 send time, Byte1 reply requested.
    return { kind: "keepalive", walEnd: buffer.readBigUInt64BE(1), replyRequested: buffer[17] === 1 };
  }
  return undefined;
}

function decodeMessage(buffer: Buffer): PgoutputMessage {
  const reader = new Reader(buffer);
  const tag = String.fromCharCode(reader.byte());
  switch (tag) {
    case "B": {
      const finalLsn = reader.int64();
      return { tag: "begin", finalLsn };
    }
    case "C": {
      reader.byte(); // flags
      const commitLsn = reader.int64();
      const endLsn = reader.int64();
      return { tag: "commit", commitLsn, endLsn };
    }
    case "R": {
      const oid = reader.int32();
      const schema = reader.cstring();
      const name = reader.cstring();
      reader.byte(); // replica identity
      const count = reader.int16();
      const columns: string[] = [];
      for (let i = 0; i < count; i++) {
        reader.byte(); // flags
        columns.push(reader.cstring());
        reader.int32(); // type oid
        reader.int32(); // type modifier
      }
      return { tag: "relation", oid, schema, name, columns };
    }
    case "I": {
      const oid = reader.int32();
      reader.byte(); // 'N': a new tuple follows
      const count = reader.int16();
      const values: (string | null)[] = [];
      for (let i = 0; i < count; i++) {
        const kind = String.fromCharCode(reader.byte());
        if (kind === "t") values.push(reader.text(reader.int32()));
        else values.push(null); // 'n' null, 'u' unchanged TOAST (never in an insert)
      }
      return { tag: "insert", oid, values };
    }
    default:
      return { tag: "other", type: tag };
  }
}

class Reader {
  private offset = 0;
  constructor(private readonly buffer: Buffer) {}
  byte(): number {
    return this.buffer.readUInt8(this.offset++);
  }
  int16(): number {
    const value = this.buffer.readInt16BE(this.offset);
    this.offset += 2;
    return value;
  }
  int32(): number {
    const value = this.buffer.readInt32BE(this.offset);
    this.offset += 4;
    return value;
  }
  int64(): bigint {
    const value = this.buffer.readBigUInt64BE(this.offset);
    this.offset += 8;
    return value;
  }
  cstring(): string {
    const end = this.buffer.indexOf(0, this.offset);
    const value = this.buffer.toString("utf8", this.offset, end);
    this.offset = end + 1;
    return value;
  }
  text(length: number): string {
    const value = this.buffer.toString("utf8", this.offset, this.offset + length);
    this.offset += length;
    return value;
  }
}

/** A 64-bit LSN as Postgres writes it: `16/B374D848`. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function parseLsn(text: string): bigint {
  const [high, low] = text.split("/");
  return (BigInt(`0x${high}`) << 32n) | BigInt(`0x${low}`);
}

/**
 * The Standby Status Update ('r') that tells the server how far the client has written, flushed
 * and applied: Postgres keeps the slot's WAL from `flushed` on.
 */
export function standbyStatus(flushed: bigint, replyRequested = false): Buffer {
  const message = Buffer.alloc(34);
  message.write("r", 0);
  message.writeBigUInt64BE(flushed, 1);
  message.writeBigUInt64BE(flushed, 9);
  message.writeBigUInt64BE(flushed, 17);
  // Microseconds since 2000-01-01.
  message.writeBigInt64BE(BigInt(Date.now() - 946_684_800_000) * 1000n, 25);
  message.writeUInt8(replyRequested ? 1 : 0, 33);
  return message;
}
