"""The quality gate: registered rules give every series a status and reason codes."""
