"""Rendering and export: tables (CSV/JSON/Markdown/text), atomic file writes, plots (lazy matplotlib)."""
