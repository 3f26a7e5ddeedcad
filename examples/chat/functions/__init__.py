"""The chat app's functions: one module per table, named "<module>:<function>"."""
