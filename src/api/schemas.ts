import { Type } from "@sinclair/typebox";

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
 * For routes whose body is checked by core code with richer errors than a schema validator
 * gives (every problem with its batch index, 413 for batch size): the schema documents the body.
 */
export const documentOnly = () => () => true;
