"""cst's common package: settings, secrets, storage, contracts, logging."""
