export { ConfigError, EnvReader, SQL_IDENTIFIER, type Env } from './env.js';
export { createLogger, LOG_LEVELS, REDACTED_PATHS, redactUrl, type Logger, type LogLevel } from './logger.js';
