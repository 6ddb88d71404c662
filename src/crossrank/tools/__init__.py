"""Tasks built on the façades (smoke check, demo, ...); the CLI renders their reports."""
