/**
 * Strict Retry-After parsing (RFC 9110 section 10.2.3 and the HTTP-date grammar of section 5.6.7).
 *
 * Choices:
 * - Only SP and HTAB around the value are ignored (OWS); inside the value the grammar is exact and case-sensitive.
 * - The day-name must be a valid name for the form but need not match the date: RFC 9110 tells recipients
 *   not to rely on it, and a sender that gets it wrong still means the date it wrote.
 * - Second 60 (a leap second) is read as 59: it is valid syntax, and waiting up to one second less is harmless.
 * - Every date is GMT. Date.parse is not used: it accepts many other forms and reads asctime in local time.
 */

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'] as const;
const MONTH = MONTHS.join('|');
const SHORT_DAY = 'Mon|Tue|Wed|Thu|Fri|Sat|Sun';
const LONG_DAY = 'Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';

// Captures: day, month, year, hour, minute, second.
const IMF_FIXDATE = new RegExp(`^(?:${SHORT_DAY}), (\\d{2}) (${MONTH}) (\\d{4}) ${TIME} GMT$`);
const RFC850_DATE = new RegExp(`^(?:${LONG_DAY}), (\\d{2})-(${MONTH})-(\\d{2}) ${TIME} GMT$`);
// Captures: month, day (a one-digit day is padded with a space), hour, minute, second, year.
const ASCTIME_DATE = new RegExp(`^(?:${SHORT_DAY}) (${MONTH}) ( \\d|\\d{2}) ${TIME} (\\d{4})$`);

const DELAY_SECONDS = /^\d+$/;
const SURROUNDING_OWS = /^[ \t]+|[ \t]+$/g;

/**
 * Parses an HTTP Retry-After value (RFC 9110 section 10.2.3) strictly.
 * Returns the delay in milliseconds (>= 0), or undefined when the header is absent or not valid.
 * Throws RangeError when nowMs is not a finite number.
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  if (!Number.isFinite(nowMs)) throw new RangeError(`nowMs must be a finite number, got ${nowMs}`);
  if (value == null) return undefined;
  const text = value.replace(SURROUNDING_OWS, '');

  if (DELAY_SECONDS.test(text)) return clampDelay(Number(text) * 1000);

  const dateMs = parseHttpDate(text, nowMs);
  if (dateMs === undefined) return undefined;
  return clampDelay(dateMs - nowMs);
}

interface DateFields {
  year: number;
  monthIndex: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

/** Milliseconds since the epoch for an HTTP-date in any of its three forms, or undefined. */
function parseHttpDate(text: string, nowMs: number): number | undefined {
  let match = IMF_FIXDATE.exec(text);
  if (match) {
    const [, day, month, year, hour, minute, second] = match;
    return validUtcMs(toFields(year, month, day, hour, minute, second));
  }

  match = RFC850_DATE.exec(text);
  if (match) {
    const [, day, month, twoDigitYear, hour, minute, second] = match;
    const fields = toFields(twoDigitYear, month, day, hour, minute, second);
    return validUtcMs({ ...fields, year: resolveTwoDigitYear(fields, nowMs) });
  }

  match = ASCTIME_DATE.exec(text);
  if (match) {
    const [, month, day, hour, minute, second, year] = match;
    return validUtcMs(toFields(year, month, day?.trimStart(), hour, minute, second));
  }

  return undefined;
}

function toFields(...texts: (string | undefined)[]): DateFields {
  const [year, month, day, hour, minute, second] = texts;
  return {
    year: Number(year),
    monthIndex: MONTHS.indexOf(month as (typeof MONTHS)[number]),
    day: Number(day),
    hour: Number(hour),
    minute: Number(minute),
    second: Number(second),
  };
}

/**
 * RFC 9110: a two-digit year that appears more than 50 years in the future means the most recent past year
 * with those digits. Starting one century ahead keeps the rule right near the end of a century too.
 * The fields are compared leniently (Feb 29 rolls over) so that the year depends only on what was written;
 * the date is validated afterwards in the chosen year.
 */
function resolveTwoDigitYear(fields: DateFields, nowMs: number): number {
  const nowYear = new Date(nowMs).getUTCFullYear();
  const fiftyYearsFromNow = shiftUtcYears(nowMs, 50);
  let year = nowYear - (nowYear % 100) + 100 + fields.year;
  while (lenientUtcMs({ ...fields, year }) > fiftyYearsFromNow) year -= 100;
  return year;
}

function validUtcMs(fields: DateFields): number | undefined {
  const { year, monthIndex, day, hour, minute, second } = fields;
  if (monthIndex < 0 || day < 1 || day > daysInMonth(year, monthIndex)) return undefined;
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  return lenientUtcMs({ ...fields, second: Math.min(second, 59) });
}

/** Out-of-range fields roll over, as with Date.UTC. */
function lenientUtcMs({ year, monthIndex, day, hour, minute, second }: DateFields): number {
  const date = new Date(0);
  // setUTCFullYear, unlike Date.UTC, does not map years 0–99 to 1900–1999.
  date.setUTCFullYear(year, monthIndex, day);
  date.setUTCHours(hour, minute, second);
  return date.getTime();
}

function daysInMonth(year: number, monthIndex: number): number {
  if (monthIndex === 1) return isLeapYear(year) ? 29 : 28;
  return [3, 5, 8, 10].includes(monthIndex) ? 30 : 31;
}

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

function shiftUtcYears(ms: number, years: number): number {
  const date = new Date(ms);
  date.setUTCFullYear(date.getUTCFullYear() + years);
  return date.getTime();
}

function clampDelay(ms: number): number {
  return Math.min(Math.max(ms, 0), Number.MAX_SAFE_INTEGER);
}
