"""Ingestion: source adapters, concurrent fetching with retries, raw landing with provenance."""
