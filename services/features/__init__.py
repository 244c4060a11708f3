"""Features: the quality gate now; point-in-time feature fusion arrives with its issue."""
