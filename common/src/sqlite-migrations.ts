/**
 * Versioned SQLite migrations (`user_version` counts those applied), shared by the stores that
 * keep an SQLite file. Only the calls it makes are typed, so common stays free of the driver.
 */

/** The part of a better-sqlite3 database the runner uses. */
export interface SqliteMigrationDatabase {
  transaction(fn: () => void): { immediate(): void };
  pragma(source: string, options?: { simple: boolean }): unknown;
  exec(source: string): unknown;
}

/**
 * Applies the migrations not yet applied, in one IMMEDIATE transaction: two processes opening
 * a new file at once run them one after the other. A file a newer version migrated is `tooNew`.
 */
export function migrateSqlite(db: SqliteMigrationDatabase, migrations: readonly string[], tooNew: (found: number, supported: number) => Error): void {
  db.transaction(() => {
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > migrations.length) throw tooNew(version, migrations.length);
    for (const migration of migrations.slice(version)) db.exec(migration);
    // PRAGMA takes no bound parameters; the value is our own constant.
    if (version < migrations.length) db.pragma(`user_version = ${migrations.length}`);
  }).immediate();
}
