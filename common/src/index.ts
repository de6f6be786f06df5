export { ConfigError, EnvReader, type Env } from './env.js';
export { createLogger, LOG_LEVELS, REDACTED_PATHS, redactUrl, type Logger, type LogLevel } from './logger.js';
