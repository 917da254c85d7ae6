"""Market history on disk: the generic CSV/JSONL format (`format`), simulated history (`simulated`), the
statistics that say whether it is believable (`stats`), and importers into a running platform (`importer`,
`manifold`)."""
