"""Rendering and export: tables (CSV/JSON/Markdown/text), reports, plots (lazy matplotlib), the HTML page;
atomic file writes live in :mod:`hwprof.files`."""
