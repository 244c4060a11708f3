"""Loopback fakes of the public APIs ingest talks to; they bind 127.0.0.1 only and never reach out."""
