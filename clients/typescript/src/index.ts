export {
  DEFAULT_TOLERANCE,
  type HeadersLike,
  InvalidSecretError,
  type VerifyOptions,
  decodeSecret,
  verifyRequest,
  verifySignature,
} from "./verify.js";
export {
  batonMiddleware,
  type MiddlewareRequest,
  type MiddlewareResponse,
  type NextFunction,
} from "./express.js";
export {
  BatonClient,
  type ClientOptions,
  type FieldError,
  ProblemError,
  type Step,
  type StepError,
  type StepStatus,
  TERMINAL_STATUSES,
  WaitTimeoutError,
  type WaitOptions,
  type Workflow,
  type WorkflowCreate,
  type WorkflowStatus,
  Workflows,
} from "./client.js";
