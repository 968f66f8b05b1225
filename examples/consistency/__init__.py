"""The transactional outbox demo: see app.py and docs/consistency.md."""
