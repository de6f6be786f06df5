export { ConfigError, EnvReader, type Env } from './env.js';
export { createLogger, LOG_LEVELS, REDACTED_PATHS, type Logger, type LogLevel } from './logger.js';
