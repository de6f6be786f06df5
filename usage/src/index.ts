// The usage pipeline's public surface, filled in as its modules land.
export {};
