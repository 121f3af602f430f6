/**
 * The logger every part and loop receives. It is pino's method shape (object first, then the
 * message), so the process logger is passed as it is and tests can pass a plain object.
 */
export interface Log {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}
