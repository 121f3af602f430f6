import { type Static, type TSchema, Type } from "@sinclair/typebox";
import { TypeCompiler } from "@sinclair/typebox/compiler";
import { AppError, type BodyCheck, type ErrorCode, type Problem } from "../core/errors.js";

/** The one error shape every 4xx and 5xx answer has. */
export const ErrorSchema = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    details: Type.Optional(
      Type.Array(
        Type.Object({ index: Type.Optional(Type.Integer()), field: Type.String(), message: Type.String() }),
      ),
    ),
  }),
});

/**
 * A Fastify validator for a TypeBox schema whose refusal is one AppError naming each wrong field,
 * for route parts (query strings, params) checked beside a body that has its own core check.
 */
export function typeBoxValidator<T extends TSchema>(
  schema: T,
  code: ErrorCode,
): (data: unknown) => BodyCheck<Static<T>> {
  const checker = TypeCompiler.Compile(schema);
  return (data) => {
    if (checker.Check(data)) return { value: data };
    const details: Problem[] = [...checker.Errors(data)].slice(0, 20).map((error) => ({
      field: error.path.replace(/^\//, "").replaceAll("/", ".") || "(query)",
      message: error.message,
    }));
    return { error: new AppError(code, { message: `${details[0]?.field} ${details[0]?.message}`, details }) };
  };
}
