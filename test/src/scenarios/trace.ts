import { writeFile } from 'node:fs/promises';

export type Actor = 'Caller' | 'AuthServer' | 'Predictor' | 'Proxy' | 'Operator';

/** The order participants are declared in, when they take part. */
const ACTORS: Actor[] = ['Caller', 'Proxy', 'Predictor', 'AuthServer', 'Operator'];

/** One line, or a request and its answer (an exchange), seen `count` times between `at` and `lastAt`. */
interface Entry {
  lines: string[];
  count: number;
  at: number;
  lastAt: number;
}

/**
 * A sequence diagram of a scenario run, rendered as Mermaid. A request and its answer
 * are one exchange; identical exchanges in a row (callers in parallel interleave, so
 * "in a row" means with no other kind of line between them) fold into one with a count,
 * so a few hundred requests stay readable. Participants that never appear are left out.
 */
export class Trace {
  readonly #started = performance.now();
  readonly #entries: Entry[] = [];
  /** Where the current run of exchanges begins: the entries from here on are all exchanges. */
  #exchangesFrom = 0;

  message(from: Actor, to: Actor, text: string, reply = false): void {
    this.#single([`${from}${reply ? '-->>' : '->>'}${to}: ${text}`]);
  }

  note(over: Actor | `${Actor},${Actor}`, text: string): void {
    this.#single([`Note over ${over}: ${text}`]);
  }

  /**
   * A request from `from` to `to` and the answer `to` gave. `standalone` ones (a token request)
   * are kept in their place: they fold only with the same exchange right before them, and
   * the exchanges after them start a new run.
   */
  exchange(from: Actor, to: Actor, request: string, answer: string, options: { standalone?: boolean } = {}): void {
    const lines = [`${from}->>${to}: ${request}`, `${to}-->>${from}: ${answer}`];
    if (options.standalone) return this.#single(lines);
    const at = this.#now();
    const same = this.#entries.slice(this.#exchangesFrom).find((entry) => entry.lines[0] === lines[0] && entry.lines[1] === lines[1]);
    if (same) {
      same.count += 1;
      same.lastAt = at;
    } else this.#entries.push({ lines, count: 1, at, lastAt: at });
  }

  /** Mermaid source. */
  render(title: string): string {
    const body = this.#entries.flatMap(({ lines, count, at, lastAt }) =>
      lines.map((text, index) => {
        const [head, label] = text.split(/: (.*)/s) as [string, string];
        const when = count > 1 ? `+${seconds(at)}–${seconds(lastAt)}s ${count}× ` : `+${seconds(at)}s `;
        return `  ${head}: ${index === 0 ? when : count > 1 ? `${count}× ` : ''}${label.replace(/[;#]/g, ' ')}`;
      }),
    );
    const used = ACTORS.filter((actor) => this.#entries.some((entry) => entry.lines.some((line) => new RegExp(`(^|[>, ])${actor}(-|,|$)`).test(line.split(': ')[0]!))));
    return ['sequenceDiagram', `  title ${title.replace(/[;#]/g, ' ')}`, ...used.map((actor) => `  participant ${actor}`), ...body, ''].join('\n');
  }

  async write(path: string, title: string): Promise<void> {
    await writeFile(path, this.render(title));
  }

  /** Lines that stay in their place; the same lines right before them fold into one with a count. */
  #single(lines: string[]): void {
    const last = this.#entries.at(-1);
    const at = this.#now();
    if (last && this.#exchangesFrom === this.#entries.length && last.lines.join('\n') === lines.join('\n')) {
      last.count += 1;
      last.lastAt = at;
    } else this.#entries.push({ lines, count: 1, at, lastAt: at });
    this.#exchangesFrom = this.#entries.length;
  }

  #now(): number {
    return performance.now() - this.#started;
  }
}

const seconds = (ms: number) => (ms / 1000).toFixed(2);
