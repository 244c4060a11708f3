"""cst's common package, imported by every service and importing none: settings, storage, contracts, logging, math."""
