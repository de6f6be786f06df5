import { writeFile } from 'node:fs/promises';

export type Actor = 'Caller' | 'AuthServer' | 'Predictor' | 'Proxy' | 'Operator';

/**
 * A sequence diagram of a scenario run, rendered as Mermaid. Consecutive identical
 * lines are folded into one with a count, so a few hundred requests stay readable.
 */
export class Trace {
  readonly #started = performance.now();
  readonly #lines: { text: string; count: number; at: number }[] = [];

  message(from: Actor, to: Actor, text: string, reply = false): void {
    this.#add(`${from}${reply ? '-->>' : '->>'}${to}: ${text}`);
  }

  note(over: Actor | `${Actor},${Actor}`, text: string): void {
    this.#add(`Note over ${over}: ${text}`);
  }

  /** Mermaid source. */
  render(title: string): string {
    const body = this.#lines.map(({ text, count, at }) => {
      const [head, label] = text.split(/: (.*)/s) as [string, string];
      const prefix = `+${(at / 1000).toFixed(2)}s ${count > 1 ? `${count}× ` : ''}`;
      return `  ${head}: ${prefix}${label.replace(/[;#]/g, ' ')}`;
    });
    return ['sequenceDiagram', `  title ${title}`, '  participant Caller', '  participant Proxy', '  participant Predictor', '  participant AuthServer', '  participant Operator', ...body, ''].join('\n');
  }

  async write(path: string, title: string): Promise<void> {
    await writeFile(path, this.render(title));
  }

  #add(text: string): void {
    const last = this.#lines.at(-1);
    if (last?.text === text) last.count += 1;
    else this.#lines.push({ text, count: 1, at: performance.now() - this.#started });
  }
}
