"""Source adapters; each turns one source into fetch tasks that return raw records and series."""
